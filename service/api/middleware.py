"""Pure ASGI middleware: CORS for the key protocols, and the request body size limit.

Pure ASGI (not BaseHTTPMiddleware) so that lookups pay almost nothing for it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every response of these paths is readable by any web origin: keys are public, and browser
# extensions and web mail call VKS, HKP and WKD directly (PROTOCOLS.md).
PROTOCOL_PREFIXES = ("/vks/", "/pks/", "/.well-known/openpgpkey/")


def _is_protocol(path: str) -> bool:
    return path.startswith(PROTOCOL_PREFIXES)


def _wants_json_errors(scope: Scope) -> bool:
    return bool(scope["path"].startswith("/vks/") and scope["method"] == "POST")


class ProtocolCORS:
    """Add ``Access-Control-Allow-Origin: *`` and answer preflights on protocol paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_protocol(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            requested = b"*"
            for name, value in scope["headers"]:
                if name == b"access-control-request-headers":
                    requested = value
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        (b"access-control-allow-origin", b"*"),
                        (b"access-control-allow-methods", b"GET, HEAD, POST, OPTIONS"),
                        (b"access-control-allow-headers", requested),
                        (b"access-control-max-age", b"86400"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h for h in message.get("headers", []) if h[0] != b"access-control-allow-origin"
                ]
                headers.append((b"access-control-allow-origin", b"*"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)


class HeadAsGet:
    """Answer HEAD on every GET route: run it as GET and send only the headers.

    WKD and HKP clients and caches send HEAD; FastAPI routes declare GET only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before the application reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await self._refuse(scope, send, 400, "The Content-Length header is invalid.")
                    return
                if declared > self.max_bytes:
                    await self._too_large(scope, send)
                    return
        # Read the whole body first (it is small by definition) so that an oversized one is
        # refused before any application code runs, whatever the client declared.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(
            scope,
            send,
            413,
            f"The request is too large: at most {self.max_bytes} bytes are accepted.",
        )

    async def _refuse(self, scope: Scope, send: Send, status: int, sentence: str) -> None:
        if _wants_json_errors(scope):
            body = json.dumps({"error": sentence}).encode()
            content_type = b"application/json"
        else:
            body = sentence.encode() + b"\n"
            content_type = b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
