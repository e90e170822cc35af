"""HKP, the keyserver protocol of GnuPG, sq, OpenKeychain and Thunderbird (`hkp://`, `hkps://`).

Wire details follow what the clients parse (draft-gallagher-openpgp-hkp and GnuPG's dirmngr):
machine-readable answers are plain text, never HTML; failures are 4xx or 501, never 502
(GnuPG marks a keyserver dead on 502).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from service import openpgp
from service.api.context import directory_of, enforce, enforce_async, lookups_of, mail_budget
from service.api.responses import key_response, text
from service.core import queries, ratelimit
from service.core.directory import IndexEntry, UploadRejected
from service.core.lookups import KeyLookups, StoredKey

router = APIRouter(prefix="/pks", tags=["HKP"])

OPERATIONS = ("get", "index", "vindex")
UNIMPLEMENTED = ("stats", "hget", "photo")


async def _find(lookups: KeyLookups, query: queries.Query) -> StoredKey | None:
    if query.kind == "fingerprint":
        key = await lookups.by_fingerprint(query.value)
    elif query.kind == "key_id":
        key = await lookups.by_key_id(query.value)
    else:
        key = await lookups.by_address(query.value)
    # v6 keys confuse older HKP clients: over HKP they are served only to a client that
    # asked for their 64-hex fingerprint, which only a v6-aware client knows.
    if (
        key is not None
        and key.version == 6
        and not (query.kind == "fingerprint" and len(query.value) == 64)
    ):
        return None
    return key


@router.get(
    "/lookup",
    operation_id="hkp_lookup",
    response_class=Response,
    summary="Look up a key (op=get) or list it (op=index, op=vindex)",
    responses={
        200: {
            "description": "op=get: the armored key. op=index/vindex: machine-readable "
            "listing with options=mr, else an HTML page.",
            "content": {"application/pgp-keys": {}, "text/plain": {}, "text/html": {}},
        },
        400: {"description": "Missing or malformed op or search.", "content": {"text/plain": {}}},
        404: {"description": "No key found.", "content": {"text/plain": {}}},
        501: {"description": "Operation not supported.", "content": {"text/plain": {}}},
    },
)
async def lookup(
    request: Request,
    *,
    op: Annotated[
        str | None,
        Query(
            description="get, index or vindex",
            json_schema_extra={"enum": list(OPERATIONS)},  # documented; others get 400/501
        ),
    ] = None,
    search: Annotated[
        str | None,
        Query(description="0x + 16 hex key ID, 0x + 40/64 hex fingerprint, or an address"),
    ] = None,
    options: Annotated[str | None, Query(description="mr: machine-readable")] = None,
    exact: Annotated[str | None, Query(description="Accepted; every search is exact")] = None,
    fingerprint: Annotated[str | None, Query(description="Accepted; always full")] = None,
) -> Response:
    del exact, fingerprint  # searches are always exact and fingerprints always full
    if not op:
        return text("The op parameter is missing (get, index or vindex).", 400)
    if op not in OPERATIONS:
        # A real HKP operation that we do not offer is "not implemented" (the draft's 501);
        # anything else is simply a bad request.
        if op in UNIMPLEMENTED or op.startswith("x-"):
            return text(f"The operation {op!r} is not supported here.", 501)
        return text(f"There is no HKP operation {op!r}; use get, index or vindex.", 400)
    if not search:
        return text("The search parameter is missing.", 400)
    try:
        query = queries.parse_search(search)
    except queries.BadQuery as exc:
        return text(str(exc), 400)
    if query.kind == "address":
        await enforce_async(request, ratelimit.ADDRESS_LOOKUP)
    key = await _find(lookups_of(request), query)
    if key is None:
        return text("No key found.", 404)
    if op == "get":
        return key_response(request, key, filename=False)
    entry = await lookups_of(request).index(key.fingerprint)
    if entry is None:
        return text("No key found.", 404)
    machine_readable = "mr" in (options or "").split(",")
    if machine_readable:
        return PlainTextResponse(machine_index([entry]), headers={"Cache-Control": "no-cache"})
    return HTMLResponse(html_index(entry, vindex=op == "vindex"))


def escape_uid(value: str) -> str:
    """Escape a user ID for a machine-readable index line: `:`, `%` and every byte outside
    printable 7-bit ASCII become %XX of the UTF-8 bytes."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if byte in (0x25, 0x3A) or byte < 0x20 or byte > 0x7E:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def machine_index(entries: list[IndexEntry]) -> str:
    lines = [f"info:1:{len(entries)}"]
    for entry in entries:
        created = str(int(entry.created.timestamp()))
        expires = str(int(entry.expires.timestamp())) if entry.expires else ""
        flags = _flags(entry)
        lines.append(
            f"pub:{entry.fingerprint}:{entry.algorithm}:{entry.bits}:{created}:{expires}:{flags}"
        )
        lines.extend(
            f"uid:{escape_uid(uid.text)}:::{'r' if uid.revoked else ''}" for uid in entry.user_ids
        )
    return "\n".join(lines) + "\n"


def _flags(entry: IndexEntry) -> str:
    flags = "r" if entry.revoked else ""
    if entry.expires is not None and entry.expires <= datetime.now(UTC):
        flags += "e"
    return flags


def html_index(entry: IndexEntry, *, vindex: bool) -> str:
    """A small page for people who open a lookup URL in a browser."""
    rows = "".join(
        f"<li>{html.escape(uid.text)}{' (revoked)' if uid.revoked else ''}</li>"
        for uid in entry.user_ids
    )
    expires = entry.expires.date().isoformat() if entry.expires else "never"
    state = "revoked" if entry.revoked else "valid"
    details = f" Algorithm {entry.algorithm}, {entry.bits} bits." if vindex else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Key {entry.fingerprint}</title></head><body>"
        f"<h1>Key <code>{entry.fingerprint}</code></h1>"
        f"<p>Created {entry.created.date().isoformat()}, expires {expires}, {state}.{details}</p>"
        f"<ul>{rows or '<li>No confirmed addresses.</li>'}</ul>"
        f'<p><a href="/pks/lookup?op=get&amp;search=0x{entry.fingerprint}">Download</a></p>'
        "</body></html>"
    )


@router.post(
    "/add",
    operation_id="hkp_add",
    response_class=PlainTextResponse,
    summary="Upload one or more keys (form field keytext)",
    responses={
        200: {"description": "Stored.", "content": {"text/plain": {}}},
        400: {"description": "No keytext field.", "content": {"text/plain": {}}},
        413: {"description": "Too large.", "content": {"text/plain": {}}},
        422: {"description": "Not an acceptable key.", "content": {"text/plain": {}}},
    },
)
def add(request: Request, keytext: Annotated[str, Form()]) -> PlainTextResponse:
    enforce(request, ratelimit.UPLOAD)
    settings = request.app.state.settings
    offer = settings.hkp_offer_verification
    foreign = offer and from_another_site(request, settings.base_url)
    budget = mail_budget(request, hkp_offers=True) if offer and not foreign else None
    try:
        result = directory_of(request).upload(
            keytext.encode("utf-8", "surrogateescape"), mail_budget=budget
        )
    except (openpgp.KeyRejected, UploadRejected) as exc:
        return text(str(exc), 422)
    lines = [
        f"{'Stored' if key.changed else 'Unchanged'}: {key.fingerprint}" for key in result.keys
    ]
    # Always 200 when the keys are stored (OpenKeychain takes anything else as a failure);
    # what was not mailed is said in a sentence that names no address.
    upload_page = directory_of(request).site.link("/upload")
    if foreign and any(key.new for key in result.keys):
        lines.append(
            "No confirmation mails were sent: this upload came from another web site. "
            f"To have your addresses confirmed, upload your key at {upload_page}."
        )
    elif budget is not None and budget.withheld:
        mails = "mail was" if budget.withheld == 1 else "mails were"
        lines.append(
            f"{budget.withheld} confirmation {mails} not sent because a mail limit was reached. "
            f"Try again later, or upload your key at {upload_page}."
        )
    return PlainTextResponse("\n".join(lines) + "\n")


def from_another_site(request: Request, base_url: str) -> bool:
    """Was this request sent by a browser on behalf of a page of another site?

    HKP clients (GnuPG, sq, OpenKeychain) send neither ``Origin`` nor ``Sec-Fetch-*`` nor
    ``Referer``; a browser's cross-site form post or fetch carries ``Origin`` (or, in older
    browsers, at least ``Referer``) and ``Sec-Fetch-Site``. Ours is only the origin of
    KEYDIR_BASE_URL, never the request's own Host header: a DNS-rebinding page talks to
    us under its own name, so its Origin and Host agree.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    ours = _origin(base_url)
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        # Origin "null" (a sandboxed frame, a redirected post) is never ours.
        if value and (ours is None or _origin(value) != ours):
            return True
    return False


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the default port filled in; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)
