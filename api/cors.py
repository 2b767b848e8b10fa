"""CORS as RudderStack answers it (spec/http-api.md "CORS"): any origin, with credentials."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SIMPLE_METHODS = frozenset(("GET", "POST", "HEAD"))


class CORSMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            headers = Headers(scope=scope)
            requested = headers.get("access-control-request-method")
            if requested is not None:
                await send(_preflight(headers.get("origin", ""), requested, headers))
                await send({"type": "http.response.body", "body": b""})
                return
        # The raw (lower-case) names, first one wins as with Headers.get: no Headers object and
        # no KeyError for the usual request that has no Origin.
        origin = next((value for name, value in scope["headers"] if name == b"origin"), b"")
        extra = [(b"vary", b"Origin")]
        if origin and method in _SIMPLE_METHODS:
            extra += [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-credentials", b"true"),
            ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _preflight(origin: str, requested: str, headers: Headers) -> Message:
    out = [(b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
    if origin and requested.upper() in _SIMPLE_METHODS:
        out += [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", requested.upper().encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-max-age", b"900"),
        ]
        asked = headers.get("access-control-request-headers", "")
        if asked:
            out.append((b"access-control-allow-headers", asked.encode("latin-1")))
    return {"type": "http.response.start", "status": 204, "headers": out}
