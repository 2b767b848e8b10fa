"""create_app(pipeline) -> Starlette: the route table, the error table, the lifespan."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from api import errors, routes
from api.admin import AdminServer
from api.cors import CORSMiddleware
from loader.errors import LoaderError
from loader.pipeline import Pipeline
from loader.sources import Source
from loader.types import CALL_TYPES


def create_app(pipeline: Pipeline, admin: bool = False) -> Starlette:
    """The public app; its lifespan starts and stops the pipeline (and the admin endpoint)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pipeline.start()
        admin_server = AdminServer(pipeline) if admin else None
        if admin_server is not None:
            await admin_server.start()
        if pipeline.created_default is not None:
            _announce(pipeline.created_default)
        try:
            yield
        finally:
            if admin_server is not None:
                await admin_server.stop()
            await pipeline.stop()

    route_table = [
        *(
            Route(f"/v1/{call}", routes.ingest(call), methods=["POST"])  # type: ignore[arg-type]
            for call in sorted(CALL_TYPES)
        ),
        Route("/v1/batch", routes.ingest(None), methods=["POST"]),
        Route("/beacon/v1/batch", routes.ingest(None, beacon=True), methods=["POST"]),
        Route("/health", routes.health, methods=["GET"]),
        Route("/version", routes.version, methods=["GET"]),
    ]
    app = Starlette(
        routes=route_table,
        middleware=[Middleware(CORSMiddleware)],
        exception_handlers={LoaderError: errors.handle},
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.commit = _commit()
    return app


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
