"""The pages people use: search, key, upload, confirm, manage, about, privacy.

Every page is server-rendered and works without JavaScript. A GET never changes anything
(mail scanners open links); every form that changes something is a POST carrying a CSRF
token that must match a SameSite=Strict cookie (double submit). A double submit alone trusts
whoever can set that cookie, a sibling subdomain included, so over HTTPS the cookie is
`__Host-` prefixed, and a form a browser says came from another site is refused whatever
it carries.
"""

from __future__ import annotations

import gettext
import hmac
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from service import openpgp
from service.api.context import directory_of, enforce
from service.core import queries, ratelimit
from service.core.directory import (
    AddressState,
    TokenState,
    UploadRejected,
    VerifyRejected,
)

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
LOCALES = HERE.parent / "locale"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.add_extension("jinja2.ext.i18n")
# English is the source language; catalogues in service/locale/<lang>/LC_MESSAGES/keydir.mo
# are picked up here once they exist.
templates.env.install_gettext_translations(  # type: ignore[attr-defined]
    gettext.translation("keydir", localedir=LOCALES, languages=["en"], fallback=True),
    newstyle=True,
)

CSRF_COOKIE = "keydir_csrf"
# Browsers take a `__Host-` cookie only from this very host, Secure, with Path=/ and no
# Domain (RFC 6265bis 4.1.3.2), so evil.example.org cannot plant one for keys.example.org.
# Plain HTTP (a laptop) cannot have it.
HOST_CSRF_COOKIE = "__Host-keydir_csrf"
# Fetch Metadata (`Sec-Fetch-Site`, sent by every current browser): forms of our own pages
# are "same-origin"; a sibling subdomain's are "same-site".
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})
# Pages load nothing from elsewhere, run no script and may not be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_STATUS = {
    TokenState.VALID: 200,
    TokenState.USED: 409,
    TokenState.EXPIRED: 410,
    TokenState.REVOKED: 409,
    TokenState.UNKNOWN: 404,
}
STATE_NAMES = {
    AddressState.UNPUBLISHED: "not published",
    AddressState.PENDING: "confirmation mail sent",
    AddressState.PUBLISHED: "published",
    AddressState.REVOKED: "revoked",
}
ALGORITHMS = {
    1: "RSA",
    3: "RSA",
    16: "ElGamal",
    17: "DSA",
    18: "ECDH",
    19: "ECDSA",
    22: "EdDSA",
    25: "X25519",
    26: "X448",
    27: "Ed25519",
    28: "Ed448",
    30: "ML-DSA-65+Ed25519",
    31: "ML-DSA-87+Ed448",
}


class CsrfFailed(Exception):
    """A state-changing form arrived without a matching token."""


def _csrf_cookie(request: Request) -> str:
    https = directory_of(request).site.base_url.startswith("https")
    return HOST_CSRF_COOKIE if https else CSRF_COOKIE


def _csrf_token(request: Request) -> str:
    token = request.cookies.get(_csrf_cookie(request), "")
    if len(token) < 32:
        token = request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(32))
    return token


def check_csrf(request: Request, submitted: str) -> None:
    if request.headers.get("sec-fetch-site", "same-origin") not in _OWN_FETCH_SITES:
        raise CsrfFailed
    cookie = request.cookies.get(_csrf_cookie(request), "")
    if not cookie or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfFailed


def _page(request: Request, name: str, code: int = 200, /, **context: object) -> Response:
    directory = directory_of(request)
    csrf = _csrf_token(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "site": directory.site.name,
            "hkp": "hkps://" + directory.site.name
            if directory.site.base_url.startswith("https")
            else directory.site.base_url.replace("http://", "hkp://"),
            "csrf": csrf,
            **context,
        },
        status_code=code,
    )
    response.headers.update(SECURITY_HEADERS)
    cookie = _csrf_cookie(request)
    if request.cookies.get(cookie) != csrf:
        response.set_cookie(
            cookie,
            csrf,
            path="/",
            httponly=True,
            samesite="strict",
            secure=cookie == HOST_CSRF_COOKIE,
        )
    return response


def _locales(request: Request) -> list[str]:
    """The browser's preferred languages, most preferred first (for mails)."""
    return [
        part.split(";")[0].strip()
        for part in request.headers.get("accept-language", "").split(",")[:5]
    ]


def error_page(request: Request, status: int, heading: str, message: str) -> Response:
    return _page(request, "error.html", status, heading=heading, message=message)


@router.get("/static/keydir.css")
def stylesheet() -> FileResponse:
    return FileResponse(
        HERE / "static" / "keydir.css",
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/")
def home(request: Request) -> Response:
    return _page(request, "home.html", query=None, error=None)


@router.get("/search")
def search(request: Request, q: str = "") -> Response:
    directory = directory_of(request)
    try:
        query = queries.parse_search(q)
    except queries.BadQuery as exc:
        return _page(request, "home.html", 400, query=q, error=str(exc))
    if query.kind == "address":
        enforce(request, ratelimit.ADDRESS_LOOKUP)
    key = directory.find(query)
    entry = directory.index(key.fingerprint) if key else None
    if entry is None:
        # The same sentence whether or not the address is on some unconfirmed key.
        return _page(request, "home.html", 404, query=q, error="No key found.")
    algorithm = ALGORITHMS.get(entry.algorithm, f"algorithm {entry.algorithm}")
    if entry.bits:
        algorithm += f", {entry.bits} bits"
    expired = entry.expires is not None and entry.expires <= datetime.now(UTC)
    return _page(request, "key.html", entry=entry, algorithm=algorithm, expired=expired)


@router.get("/about")
def about(request: Request) -> Response:
    return _page(request, "about.html")


@router.get("/privacy")
def privacy(request: Request) -> Response:
    limits = directory_of(request).limits
    return _page(
        request,
        "privacy.html",
        verify_days=limits.verify_token_lifetime.days,
        manage_hours=int(limits.manage_token_lifetime.total_seconds() // 3600),
        upload_hours=int(limits.upload_token_lifetime.total_seconds() // 3600),
        retention_days=request.app.state.settings.retention_days,
    )


@router.get("/upload")
def upload_form(request: Request) -> Response:
    return _page(request, "upload.html", error=None)


@router.post("/upload")
async def upload_submit(
    request: Request,
    csrf: Annotated[str, Form(max_length=100)] = "",
    keytext: Annotated[str, Form()] = "",
    keyfile: Annotated[UploadFile | None, File()] = None,
) -> Response:
    check_csrf(request, csrf)
    await run_in_threadpool(enforce, request, ratelimit.UPLOAD)
    data = keytext.encode("utf-8", "surrogateescape")
    if keyfile is not None and keyfile.filename:
        data = await keyfile.read()
    if not data.strip():
        return _page(request, "upload.html", 400, error="Choose a key file or paste a key.")
    try:
        result = await run_in_threadpool(directory_of(request).upload, data, single=True)
    except (openpgp.KeyRejected, UploadRejected) as exc:
        return _page(request, "upload.html", 400, error=str(exc))
    key = result.keys[0]
    return _page(
        request,
        "uploaded.html",
        fingerprint=key.fingerprint,
        addresses=key.status,
        token=result.token,
        state_names=STATE_NAMES,
        notice=None,
    )


@router.post("/upload/verify")
def upload_verify(
    request: Request,
    *,
    csrf: Annotated[str, Form(max_length=100)] = "",
    token: Annotated[str, Form(max_length=200)],
    address: Annotated[str, Form(max_length=320)],
) -> Response:
    check_csrf(request, csrf)
    enforce(request, ratelimit.MAIL)
    locales = _locales(request)
    try:
        key = directory_of(request).request_verify(token, [address], locales)
    except VerifyRejected as exc:
        return error_page(request, 400, "Cannot send the mail", str(exc))
    return _page(
        request,
        "uploaded.html",
        fingerprint=key.fingerprint,
        addresses=key.status,
        token=token,
        state_names=STATE_NAMES,
        notice=f"If {address} can receive mail, a confirmation link is on its way to it.",
    )


@router.get("/verify/{token}")
def verify_page(request: Request, token: str) -> Response:
    found = directory_of(request).confirmation(token)
    return _page(
        request,
        "verify.html",
        _STATUS[found.state],
        state=found.state.value,
        token=token,
        address=found.address,
        fingerprint=found.fingerprint,
    )


@router.post("/verify/{token}")
def verify_submit(
    request: Request, token: str, csrf: Annotated[str, Form(max_length=100)] = ""
) -> Response:
    check_csrf(request, csrf)
    done = directory_of(request).confirm(token)
    state = "confirmed" if done.state == TokenState.VALID else done.state.value
    return _page(
        request,
        "verify.html",
        _STATUS[done.state],
        state=state,
        token=token,
        address=done.address,
        fingerprint=done.fingerprint,
    )


@router.get("/manage")
def manage_form(request: Request) -> Response:
    return _page(request, "manage_request.html", sent=False, error=None)


@router.post("/manage")
def manage_request(
    request: Request,
    *,
    csrf: Annotated[str, Form(max_length=100)] = "",
    address: Annotated[str, Form(max_length=320)],
) -> Response:
    check_csrf(request, csrf)
    enforce(request, ratelimit.MAIL)
    locales = _locales(request)
    try:
        directory_of(request).request_manage(address, locales)
    except VerifyRejected as exc:
        return _page(request, "manage_request.html", 400, sent=False, error=str(exc))
    # The same answer whether or not the address is known: nothing is revealed.
    return _page(request, "manage_request.html", sent=True, address=address, error=None)


def _manage_page(
    request: Request, token: str, view_state: TokenState, **context: object
) -> Response:
    return _page(
        request, "manage.html", _STATUS[view_state], state=view_state.value, token=token, **context
    )


@router.get("/manage/{token}")
def manage_page(request: Request, token: str) -> Response:
    view = directory_of(request).manage_view(token)
    return _manage_page(request, token, view.state, address=view.address, keys=view.keys)


@router.post("/manage/{token}/unpublish")
def manage_unpublish(
    request: Request,
    token: str,
    *,
    csrf: Annotated[str, Form(max_length=100)] = "",
    fingerprint: Annotated[str, Form(max_length=64)],
    address: Annotated[str, Form(max_length=320)],
) -> Response:
    check_csrf(request, csrf)
    view = directory_of(request).unpublish(token, fingerprint, address)
    if view.state != TokenState.VALID:
        return _manage_page(request, token, view.state)
    return RedirectResponse(f"/manage/{token}", status_code=303)


@router.post("/manage/{token}/delete")
def manage_delete(
    request: Request,
    token: str,
    *,
    csrf: Annotated[str, Form(max_length=100)] = "",
    fingerprint: Annotated[str, Form(max_length=64)],
) -> Response:
    check_csrf(request, csrf)
    view = directory_of(request).delete_identity(token, fingerprint)
    if view.state != TokenState.VALID:
        return _manage_page(request, token, view.state)
    return RedirectResponse(f"/manage/{token}", status_code=303)
