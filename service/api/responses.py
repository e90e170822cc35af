"""Response helpers shared by the protocol adapters."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import PlainTextResponse

from service.core.directory import PublishedKey

# Short enough that a revocation or new subkey reaches every client within a minute.
CACHE_CONTROL = "public, max-age=60"
PGP_KEYS = "application/pgp-keys"


def key_response(request: Request, key: PublishedKey, *, filename: bool = True) -> Response:
    """The armored key, with a strong ETag; 304 when the client already has these bytes."""
    etag = f'"{key.digest}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{key.fingerprint}.asc"'
    if etag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    return Response(key.armor, media_type=PGP_KEYS, headers=headers)


def _if_none_match(request: Request) -> set[str]:
    raw = request.headers.get("if-none-match", "")
    return {part.strip().removeprefix("W/") for part in raw.split(",") if part.strip()}


def text(sentence: str, status_code: int) -> PlainTextResponse:
    """A plain-text error: the lookups of keys.openpgp.org answer this way."""
    return PlainTextResponse(sentence + "\n", status_code=status_code)
