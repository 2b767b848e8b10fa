"""The gateway: what the HTTP process owns: the spool writer, the batcher, the source registry
and the handle on the loader process. It never opens DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loader.batcher import Batcher
from loader.metrics import Metrics
from loader.pipeline import Pipeline
from loader.settings import Settings
from loader.sources import Registry, Source
from loader.spool import Spool
from loader.worker import LoaderHandle


class Gateway:
    def __init__(self, settings: Settings, admin: Callable[[Pipeline], Any] | None = None) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.registry = Registry()
        self.batcher = Batcher(self.spool, settings, on_seal=lambda _: self.loader.wake())
        self.metrics = Metrics(self.spool.backlog)
        self.loader = LoaderHandle(
            settings, self.registry.replace, self.batcher.seal, admin, self.metrics.loaded
        )

    @property
    def created_default(self) -> Source | None:
        return self.loader.created_default

    async def start(self) -> None:
        """The loader first (it migrates, recovers the spool, loads leftovers), then accept."""
        await self.loader.start()
        await self.batcher.start()

    async def stop(self) -> None:
        """Requests are drained by uvicorn; seal what is open, let the loader finish, stop."""
        await self.batcher.stop()
        await self.loader.stop()
