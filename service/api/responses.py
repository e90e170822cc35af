"""Response helpers shared by the protocol adapters."""

from __future__ import annotations

from typing import Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

# Short enough that a revocation or new subkey reaches every client within a minute.
CACHE_CONTROL = "public, max-age=60"
PGP_KEYS = "application/pgp-keys"


class ServedKey(Protocol):
    @property
    def fingerprint(self) -> str: ...
    @property
    def armor(self) -> str: ...
    @property
    def digest(self) -> str: ...


def key_response(request: Request, key: ServedKey, *, filename: bool = True) -> Response:
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


def error_response(request: Request, status: int, sentence: str) -> Response:
    """An error as the endpoint's clients read it: JSON for VKS posts, else plain text."""
    if request.url.path.startswith("/vks/") and request.method == "POST":
        return JSONResponse({"error": sentence}, status_code=status)
    return PlainTextResponse(sentence + "\n", status_code=status)


def database_unavailable(request: Request) -> Response:
    # Never a 5xx that clients read as "this server is broken" for good, never a hang.
    response = error_response(
        request, 503, "The key directory's database is unavailable; try again in a minute."
    )
    response.headers["Retry-After"] = "30"
    return response


def too_many_requests(request: Request, retry_after: int) -> Response:
    response = error_response(
        request,
        429,
        f"Too many requests of this kind from your address. Try again in {retry_after} seconds.",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def unexpected_error(request: Request) -> Response:
    return error_response(request, 500, "Something went wrong on our side; it has been logged.")
