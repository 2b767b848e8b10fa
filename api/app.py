"""create_app(gateway) -> Starlette: the route table, the middleware, the lifespan."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import get_args

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, routes
from api.cors import CORSMiddleware
from loader.errors import LoaderError
from loader.gateway import Gateway
from loader.sources import Source
from loader.types import CallType


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

    ingest = {
        "/v1/batch": routes.Ingest(gateway, None),
        **{f"/v1/{call}": routes.Ingest(gateway, call) for call in get_args(CallType)},
        "/beacon/v1/batch": routes.Ingest(gateway, None, beacon=True),
    }
    # The router answers the ingest paths' other methods (405); IngestFirst takes their POSTs.
    route_table = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in ingest.items()),
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
            Middleware(IngestFirst, endpoints=ingest),
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


class IngestFirst:
    """POSTs to the ingest paths go straight to their endpoint, ahead of the exception
    middleware, the router and its regexes: the hot path pays for none of them. A LoaderError
    is answered from the same table as the exception middleware's (api/errors.py)."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, ASGIApp]) -> None:
        self.app, self.endpoints = app, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                try:
                    await endpoint(scope, receive, send)
                except LoaderError as exc:  # the exception middleware's job: it is behind us
                    answer = errors.response(exc, scope["method"], scope["path"])
                    await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
