"""The pages a person reaches from our mails: confirm an address, manage a key.

A GET only shows a page (mail scanners open links); the POST from that page acts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from service.core.directory import Directory, TokenState, VerifyRejected

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Pages load nothing from elsewhere and may not be framed.
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


def _directory(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


def _page(request: Request, name: str, status: int = 200, **context: object) -> Response:
    response = templates.TemplateResponse(
        request, name, {"site": _directory(request).site.name, **context}, status_code=status
    )
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/static/keydir.css")
def stylesheet() -> FileResponse:
    return FileResponse(
        HERE / "static" / "keydir.css",
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/verify/{token}")
def verify_page(request: Request, token: str) -> Response:
    found = _directory(request).confirmation(token)
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
def verify_submit(request: Request, token: str) -> Response:
    done = _directory(request).confirm(token)
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
def manage_request(request: Request, address: Annotated[str, Form(max_length=320)]) -> Response:
    locales = [
        part.split(";")[0].strip()
        for part in request.headers.get("accept-language", "").split(",")[:5]
    ]
    try:
        _directory(request).request_manage(address, locales)
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
    view = _directory(request).manage_view(token)
    return _manage_page(request, token, view.state, address=view.address, keys=view.keys)


@router.post("/manage/{token}/unpublish")
def manage_unpublish(
    request: Request,
    token: str,
    fingerprint: Annotated[str, Form(max_length=64)],
    address: Annotated[str, Form(max_length=320)],
) -> Response:
    view = _directory(request).unpublish(token, fingerprint, address)
    if view.state != TokenState.VALID:
        return _manage_page(request, token, view.state)
    return RedirectResponse(f"/manage/{token}", status_code=303)


@router.post("/manage/{token}/delete")
def manage_delete(
    request: Request, token: str, fingerprint: Annotated[str, Form(max_length=64)]
) -> Response:
    view = _directory(request).delete_identity(token, fingerprint)
    if view.state != TokenState.VALID:
        return _manage_page(request, token, view.state)
    return RedirectResponse(f"/manage/{token}", status_code=303)
