"""Crash points for the crash tests: with LOADER_CRASH_AT=<point> in the environment, the
process kills itself with SIGKILL the LOADER_CRASH_AFTER-th time (default 1st) it reaches that
point. Nothing else reads these two variables; without them `point()` costs one comparison.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("LOADER_CRASH_AT") or None
_AFTER = int(os.environ.get("LOADER_CRASH_AFTER", "1"))
_seen = 0

POINTS = (
    "request",  # a request's body is read, nothing spooled yet
    "fsync",  # the spool append is written, not yet fsynced
    "acknowledge",  # fsynced, the 200 not yet sent
    "load",  # a load's rows are inserted, not yet committed
    "add_column",  # a load has run ALTER TABLE ADD COLUMN, not yet committed
    "relabel",  # identity components are relabelled, not yet committed
    "import",  # before an import batch loads (the ones before it are committed)
)


def point(name: str) -> None:
    global _seen
    if _TARGET is not None and name == _TARGET:
        _seen += 1
        if _seen >= _AFTER:
            os.kill(os.getpid(), signal.SIGKILL)
