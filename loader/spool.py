"""Write-ahead segments on disk: append + fsync, seal, list, complete, fail.

State lives in folder names (open/, sealed/, failed/); segments move with os.replace and a
directory fsync and are never edited in place, except that recovery cuts a torn last line.
Not thread-safe: one writer thread appends and seals; readers only list and read sealed/.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from loader import faults
from loader.errors import Unavailable

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
_sequence = itertools.count()


class Backlog(NamedTuple):
    segments: int
    bytes: int
    oldest_age: float
    """Seconds since the oldest sealed segment was created; 0.0 when there is none."""
    failed: int


class Recovered(NamedTuple):
    segment_id: str
    torn_bytes: int


def new_segment_id() -> str:
    """Ids sort by creation time, so sorted(listdir) is arrival order."""
    return f"{time.time_ns():020d}-{os.getpid():07d}-{next(_sequence) % 1_000_000:06d}"


def segment_age(segment_id: str, now: float) -> float:
    return max(0.0, now - int(segment_id.split("-", 1)[0]) / 1e9)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.open_dir = root / "open"
        self.sealed_dir = root / "sealed"
        self.failed_dir = root / "failed"
        for folder in (self.open_dir, self.sealed_dir, self.failed_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._file: int | None = None
        self._segment_id: str | None = None
        self.open_events = 0
        self.open_bytes = 0
        self.opened_at = 0.0

    # -- the writer's side -------------------------------------------------------------

    def append(self, chunks: Sequence[bytes], events: int) -> None:
        """Append encoded events to the open segment; returns only after fsync.

        On any write error the segment is cut back to its previous length, so nothing is
        half-written, and Unavailable is raised: the caller answers 503.
        """
        if self._file is None:
            try:
                self._open()
            except OSError as exc:  # no inode, no directory block, quota: nothing written
                self._abandon_open()
                raise Unavailable(_reason(exc)) from exc
        assert self._file is not None, "segment must be open"
        start = self.open_bytes
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(self._file, view)
                    view = view[written:]
            faults.point("fsync")
            os.fsync(self._file)
        except OSError as exc:
            self._rollback(start)
            raise Unavailable(_reason(exc)) from exc
        self.open_bytes = start + sum(len(chunk) for chunk in chunks)
        self.open_events += events

    def seal(self) -> str | None:
        """Close the open segment and move it to sealed/; returns its id (None if empty)."""
        if self._file is None or self._segment_id is None:
            return None
        segment_id = self._segment_id
        os.close(self._file)
        self._file, self._segment_id = None, None
        if self.open_events == 0:
            (self.open_dir / (segment_id + SUFFIX)).unlink()
            return None
        _move(self.open_dir / (segment_id + SUFFIX), self.sealed_dir / (segment_id + SUFFIX))
        self.open_events = self.open_bytes = 0
        return segment_id

    def _open(self) -> None:
        self._segment_id = new_segment_id()
        path = self.open_dir / (self._segment_id + SUFFIX)
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        _fsync_dir(self.open_dir)  # the new name must survive a crash too
        self.open_events = self.open_bytes = 0
        self.opened_at = time.monotonic()

    def _abandon_open(self) -> None:
        """A segment whose creation failed half-way (file made, directory not synced)."""
        if self._file is not None:
            os.close(self._file)
        if self._segment_id is not None:
            (self.open_dir / (self._segment_id + SUFFIX)).unlink(missing_ok=True)
        self._file, self._segment_id = None, None

    def _rollback(self, length: int) -> None:
        assert self._file is not None, "segment must be open"
        try:
            os.ftruncate(self._file, length)
            os.fsync(self._file)
        except OSError:
            # Cannot even truncate: seal what is whole and let recovery cut the torn tail.
            logger.exception(
                "Could not cut spool segment %s back after a failed write", self._segment_id
            )

    # -- recovery and the loader's side ----------------------------------------------

    def recover(self) -> list[Recovered]:
        """Seal every segment a crash left in open/, cutting a torn last line off."""
        recovered = []
        for path in sorted(self.open_dir.glob("*" + SUFFIX)):
            torn = _cut_torn_tail(path)
            if torn:
                logger.warning(
                    "Spool segment %s ended in a torn line of %d bytes (a crash mid-write; "
                    "that request was never acknowledged): cut off",
                    path.stem,
                    torn,
                )
            if path.stat().st_size == 0:
                path.unlink()
                continue
            _move(path, self.sealed_dir / path.name)
            recovered.append(Recovered(path.stem, torn))
        return recovered

    def sealed(self) -> list[str]:
        return sorted(
            p.name[: -len(SUFFIX)] for p in os.scandir(self.sealed_dir) if p.name.endswith(SUFFIX)
        )

    def path(self, segment_id: str) -> Path:
        return self.sealed_dir / (segment_id + SUFFIX)

    def complete(self, segment_id: str) -> None:
        """Remove a sealed segment; only after the warehouse COMMIT that loaded it."""
        self.path(segment_id).unlink(missing_ok=True)
        _fsync_dir(self.sealed_dir)

    def fail(self, segment_id: str, reason: str) -> None:
        """Quarantine a segment that can never load, with a .error file saying why."""
        error = self.failed_dir / (segment_id + ".error")
        error.write_text(reason.rstrip() + "\n", encoding="utf-8")
        _move(self.path(segment_id), self.failed_dir / (segment_id + SUFFIX))
        logger.error("Segment %s moved to %s: %s", segment_id, self.failed_dir, reason)

    def backlog(self) -> Backlog:
        sizes, oldest = 0, None
        segments = 0
        for entry in os.scandir(self.sealed_dir):
            if entry.name.endswith(SUFFIX):
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:  # loaded and removed by the loader meanwhile
                    continue
                segments += 1
                sizes += size
                oldest = entry.name if oldest is None else min(oldest, entry.name)
        failed = sum(1 for p in os.scandir(self.failed_dir) if p.name.endswith(SUFFIX))
        age = segment_age(oldest, time.time()) if oldest else 0.0
        return Backlog(segments, sizes, age, failed)

    def count_events(self) -> int:
        """Events waiting in sealed/ (counts lines; for status, not for the hot path)."""
        total = 0
        for segment_id in self.sealed():
            with self.path(segment_id).open("rb") as file:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
        return total


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return f"spool write failed ({exc})"


def _cut_torn_tail(path: Path) -> int:
    """Truncate anything after the last newline; returns the bytes cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("r+b") as file:
        tail_start = max(0, size - (1 << 16))
        while True:
            file.seek(tail_start)
            block = file.read(size - tail_start)
            newline = block.rfind(b"\n")
            if newline >= 0 or tail_start == 0:
                break
            tail_start = max(0, tail_start - (1 << 20))
        keep = tail_start + newline + 1 if newline >= 0 else 0
        if keep < size:
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
        return size - keep


def _move(source: Path, target: Path) -> None:
    os.replace(source, target)
    _fsync_dir(target.parent)
    if source.parent != target.parent:
        _fsync_dir(source.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
