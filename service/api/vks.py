"""VKS v1, the JSON/HTTP API of keys.openpgp.org (Thunderbird's `vks://`).

Lookups answer armored keys or a plain-text sentence; the POST endpoints always answer JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service import openpgp
from service.api.context import directory_of, enforce, enforce_async, lookups_of, mail_budget
from service.api.responses import PGP_KEYS, ServedKey, key_response, text
from service.core import queries, ratelimit
from service.core.directory import (
    AddressState,
    UploadRejected,
    VerifyRejected,
)

router = APIRouter(prefix="/vks/v1", tags=["VKS"])

FINGERPRINT_PATTERN = r"^(0[xX])?([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$"
KEY_ID_PATTERN = r"^(0[xX])?[0-9A-Fa-f]{16}$"
ADDRESS_PATTERN = (
    r"^[A-Za-z0-9_+-]{1,32}(\.[A-Za-z0-9_+-]{1,31})?"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,4}[A-Za-z]{2,63}$"
)


class UploadRequest(BaseModel):
    # No length here: KEYDIR_MAX_UPLOAD_BYTES bounds the whole body before parsing.
    keytext: str = Field(description="One ASCII-armored public key.")


class UploadResponse(BaseModel):
    token: str = Field(description="Upload token for request-verify.")
    key_fpr: str = Field(description="Fingerprint of the uploaded key, upper-case hex.")
    status: dict[str, AddressState] = Field(
        description="State of every address on the key's valid user IDs."
    )


class VerifyRequest(BaseModel):
    token: str = Field(description="The token from the upload response.", max_length=200)
    addresses: list[str] = Field(
        description="Addresses of the key to send confirmation mails to.", max_length=100
    )
    locale: list[str] = Field(
        default_factory=list,
        description="Preferred languages for the mails, most preferred first (e.g. de_DE).",
        max_length=20,
    )


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in a sentence for people.")


_KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The ASCII-armored key.",
        "content": {PGP_KEYS: {"schema": {"type": "string"}}},
    },
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
    400: {"description": "Malformed query.", "content": {"text/plain": {}}},
    404: {"description": "No key found.", "content": {"text/plain": {}}},
}
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in (
        (400, "The key was not accepted; the sentence says why."),
        (413, "The request is too large."),
        (422, "The request body is not the expected JSON."),
    )
}


def _answer(request: Request, key: ServedKey | None, what: str) -> Response:
    if key is None:
        return text(f"No key found for {what}.", 404)
    return key_response(request, key)


@router.get(
    "/by-fingerprint/{fingerprint}",
    operation_id="vks_by_fingerprint",
    response_class=Response,
    responses=_KEY_RESPONSES,
    summary="Get a key by the fingerprint of its primary key or a subkey",
)
async def by_fingerprint(
    request: Request,
    fingerprint: Annotated[
        str,
        Path(
            description="40 or 64 hex digits, `0x` optional.",
            # Documented, not enforced by FastAPI: a malformed value gets our own 400.
            json_schema_extra={"pattern": FINGERPRINT_PATTERN},
        ),
    ],
) -> Response:
    try:
        value = queries.parse_fingerprint(fingerprint)
    except queries.BadQuery as exc:
        return text(str(exc), 400)
    key = await lookups_of(request).by_fingerprint(value)
    return _answer(request, key, f"fingerprint {value}")


@router.get(
    "/by-keyid/{key_id}",
    operation_id="vks_by_keyid",
    response_class=Response,
    responses=_KEY_RESPONSES,
    summary="Get a key by the 16-hex key ID of its primary key or a subkey",
)
async def by_keyid(
    request: Request,
    key_id: Annotated[
        str,
        Path(
            description="16 hex digits, `0x` optional.",
            json_schema_extra={"pattern": KEY_ID_PATTERN},
        ),
    ],
) -> Response:
    try:
        value = queries.parse_key_id(key_id)
    except queries.BadQuery as exc:
        return text(str(exc), 400)
    return _answer(request, await lookups_of(request).by_key_id(value), f"key ID {value}")


@router.get(
    "/by-email/{address}",
    operation_id="vks_by_email",
    response_class=Response,
    responses=_KEY_RESPONSES,
    summary="Get the key published for a confirmed e-mail address",
)
async def by_email(
    request: Request,
    address: Annotated[
        str,
        Path(
            description="The address, URL-encoded.", json_schema_extra={"pattern": ADDRESS_PATTERN}
        ),
    ],
) -> Response:
    try:
        value = queries.parse_address(address)
    except queries.BadQuery as exc:
        return text(str(exc), 400)
    await enforce_async(request, ratelimit.ADDRESS_LOOKUP)
    # The 404 sentence is the same whether or not the address is on some unpublished key.
    return _answer(request, await lookups_of(request).by_address(value), "this address")


@router.post(
    "/upload",
    operation_id="vks_upload",
    response_model=UploadResponse,
    responses=_JSON_ERRORS,
    summary="Upload a public key",
)
def upload(request: Request, body: Annotated[UploadRequest, Body()]) -> Response | UploadResponse:
    enforce(request, ratelimit.UPLOAD)
    try:
        result = directory_of(request).upload(body.keytext.encode("utf-8"), single=True)
    except (openpgp.KeyRejected, UploadRejected) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    key = result.keys[0]
    assert result.token is not None
    return UploadResponse(token=result.token, key_fpr=key.fingerprint, status=key.status)


@router.post(
    "/request-verify",
    operation_id="vks_request_verify",
    response_model=UploadResponse,
    responses=_JSON_ERRORS,
    summary="Send confirmation mails to addresses of an uploaded key",
)
def request_verify(
    request: Request, body: Annotated[VerifyRequest, Body()]
) -> Response | UploadResponse:
    # The request counts as its first mail (a client over its limit gets a 429); each
    # further address mailed counts one more.
    enforce(request, ratelimit.MAIL)
    try:
        key = directory_of(request).request_verify(
            body.token, body.addresses, body.locale, mail_budget=mail_budget(request, prepaid=1)
        )
    except VerifyRejected as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return UploadResponse(token=body.token, key_fpr=key.fingerprint, status=key.status)
