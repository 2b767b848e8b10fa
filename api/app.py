"""create_app(pipeline) -> Starlette: the route table, the error table, the lifespan."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, routes
from api.cors import CORSMiddleware
from loader.errors import LoaderError
from loader.gateway import Gateway
from loader.sources import Source
from loader.types import CALL_TYPES

_BUSIEST = ["track", "page", "identify", "screen", "group", "alias", "merge"]
"""The single calls, most frequent first (as SDKs send them)."""


def create_app(gateway: Gateway) -> Starlette:
    """The public app; its lifespan starts and stops the gateway (and so the loader)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if gateway.created_default is not None:
            _announce(gateway.created_default)
        try:
            yield
        finally:
            await gateway.stop()

    # The router tries routes in order (a regex match each): the busiest come first.
    route_table = [
        Route("/v1/batch", routes.ingest(None), methods=["POST"]),
        *(
            Route(f"/v1/{call}", routes.ingest(call), methods=["POST"])  # type: ignore[arg-type]
            for call in sorted(CALL_TYPES, key=_BUSIEST.index)
        ),
        Route("/beacon/v1/batch", routes.ingest(None, beacon=True), methods=["POST"]),
        Route("/health", routes.health, methods=["GET"]),
        Route("/version", routes.version, methods=["GET"]),
        Route("/metrics", routes.metrics, methods=["GET"]),
        Route("/openapi.json", routes.openapi_json, methods=["GET"]),
    ]
    app = Starlette(
        routes=route_table,
        middleware=[
            Middleware(RequestMetrics, gateway=gateway, paths={r.path for r in route_table}),
            Middleware(CORSMiddleware),
        ],
        exception_handlers={LoaderError: errors.handle},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.commit = _commit()
    return app


class RequestMetrics:
    """Counts responses by endpoint and status; unknown paths count as `other`, so a scan
    of random URLs cannot grow the metric without bound."""

    def __init__(self, app: ASGIApp, gateway: Gateway, paths: set[str]) -> None:
        self.app, self.gateway, self.paths = app, gateway, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.paths else "other"

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.gateway.metrics.request(endpoint, message["status"])
            await send(message)

        await self.app(scope, receive, counting)


def _announce(source: Source) -> None:
    print(
        f"Created source `{source.name}` (namespace `{source.namespace}`). Its write key, "
        f"shown only now (see `loader sources rotate-key`):\n{source.write_key}",
        flush=True,
    )


def _commit() -> str | None:
    """The git commit of the running code, when it runs from a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
