"""`loader serve`: uvicorn with the public app, the admin endpoint beside it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import uvicorn

from api import admin
from api.app import create_app
from api.protocol import BoundedHttpToolsProtocol
from loader.gateway import Gateway
from loader.settings import Settings

logger = logging.getLogger(__name__)

_GC_THRESHOLDS = (20_000, 20, 20)
"""Parsed events are ~25 containers each. With the default (700, 10, 10) and nothing frozen,
the collector took ~5 of every 50 s under bench/http_ingest.py, most of it in full collections
walking every imported module's objects; frozen and with these thresholds, under 0.1 s."""


def run(settings: Settings) -> None:
    """`loader serve`: serve() on uvloop when it is installed (uvicorn[standard] has it, except
    on Windows and PyPy). uvicorn picks uvloop only in uvicorn.run(), which cannot await the
    loader's start; uvloop takes 5-15% less CPU per request than asyncio's own loop."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))


async def serve(settings: Settings) -> None:
    app = create_app(Gateway(settings, admin=admin.start_in_thread))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        lifespan="on",
        timeout_keep_alive=15,
        timeout_graceful_shutdown=30,
        http=BoundedHttpToolsProtocol,  # heads over 64 KB or slower than 30 s are refused
        # X-Forwarded-For is read by enrich.client_ip with our own trusted proxies and
        # RudderStack's rule (the first entry); uvicorn's rule would rewrite the peer first.
        # (X-Forwarded-Proto goes too: nothing here builds an absolute URL but the router's
        # trailing-slash redirect.)
        proxy_headers=False,
        server_header=False,
    )
    logger.info(
        "Serving on http://%s:%d, warehouse %s, spool %s",
        settings.host,
        settings.port,
        settings.database.resolve(),
        settings.spool_dir.resolve(),
    )
    # The modules, the app and the settings live as long as the process: freeze them, so that
    # collections walk only what requests create (cyclic garbage is still collected).
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    await uvicorn.Server(config).serve()
