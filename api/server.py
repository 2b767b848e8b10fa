"""`loader serve`: uvicorn with the public app, the admin endpoint beside it."""

from __future__ import annotations

import logging

import uvicorn

from api import admin
from api.app import create_app
from api.protocol import BoundedHttpToolsProtocol
from loader.gateway import Gateway
from loader.settings import Settings

logger = logging.getLogger(__name__)


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
        server_header=False,
    )
    logger.info(
        "Serving on http://%s:%d, warehouse %s, spool %s",
        settings.host,
        settings.port,
        settings.database.resolve(),
        settings.spool_dir.resolve(),
    )
    await uvicorn.Server(config).serve()
