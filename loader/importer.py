"""Historical imports: JSON files -> the HTTP API's validation, then the loader's own
transform/dedup/identity path, in large micro-batches, checkpointed per file and position.

Formats, detected per file (gzip by its magic bytes): NDJSON (one event per line; a line may
also be a RudderStack job `{"batch": [...], "receivedAt", "requestIP"}`), a JSON array of
events, or a JSON object `{"batch": [...]}`. Memory stays bounded by the micro-batch size.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import ijson
import orjson

from loader import faults
from loader.enrich import enrich
from loader.errors import LoaderError, RequestRejected
from loader.spec import identifier, validate

logger = logging.getLogger(__name__)

OnError = Literal["abort", "skip"]
Progress = Callable[[dict[str, Any]], None]
Format = Literal["ndjson", "array", "batch"]

_BATCH_START = re.compile(rb'\{\s*"batch"\s*:')
_IDS = uuid.UUID("6f1c5b2e-8f3e-4b7a-9d2c-1a0e5f4b3c21")
"""uuid5 namespace of the messageIds given to events that have none (file hash, position)."""


class ImportAborted(LoaderError):
    """`--on-error abort` met a bad line; the message is `FILE:LINE: reason`."""


class Record(NamedTuple):
    position: int
    """1-based line (NDJSON) or element number (JSON documents)."""
    events: list[Any]
    error: str | None


class Checkpoint(NamedTuple):
    file_hash: str
    source: str
    path: str
    position: int
    events: int
    completed: bool


class Summary(NamedTuple):
    files: int
    events_loaded: int
    duplicates: int
    rejected: int
    tables: list[str]
    elapsed: float
    resumed: int
    """Files continued from a checkpoint of an earlier, interrupted import."""
    skipped: int
    """Files already imported whole (same content, same source)."""


def discover(paths: Iterable[Path]) -> list[Path]:
    """Files, and the files in folders (recursively, hidden ones left out), in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise LoaderError(f"{path}: no such file or folder.")
    return found


def content_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_file(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(raw file, decoded stream): gzip is recognised by its magic bytes, not the name."""
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw, raw


def detect(stream: IO[bytes]) -> Format:
    """Look at the start of a (seekable-or-not) stream without consuming it for the caller."""
    try:
        head = stream.peek(65536)[:65536] if hasattr(stream, "peek") else b""
    except (EOFError, OSError, zlib.error):
        return "ndjson"  # a damaged gzip: the reader reports it at its line
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "array"
    if _BATCH_START.match(text) and b"\n" in text:
        try:  # {"batch": [...]} on one line is NDJSON of one job line, read as such
            orjson.loads(text.split(b"\n", 1)[0])
        except orjson.JSONDecodeError:
            return "batch"  # one JSON object over several lines: {"batch": [...]}
    return "ndjson"


def records(stream: IO[bytes], fmt: Format, start: int = 0) -> Iterator[Record]:
    """The file's records after position `start` (earlier NDJSON lines are not parsed)."""
    if fmt == "ndjson":
        yield from _ndjson(stream, start)
        return
    prefix = "item" if fmt == "array" else "batch.item"
    position = 0
    try:
        for position, item in enumerate(ijson.items(stream, prefix, use_float=True), 1):
            yield Record(position, [item], None)
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, *_DAMAGED) as exc:
        yield Record(position + 1, [], f"Invalid JSON: {exc} (the rest of the file is unreadable)")


_DAMAGED = (EOFError, gzip.BadGzipFile, zlib.error)
"""What reading a truncated or corrupt gzip file raises."""


def _ndjson(stream: IO[bytes], start: int) -> Iterator[Record]:
    number = 0
    try:
        for number, line in enumerate(stream, 1):
            if number <= start or not line.strip():
                continue
            yield _ndjson_record(number, line)
    except _DAMAGED as exc:
        yield Record(number + 1, [], f"the file is damaged ({exc}); the rest is unreadable")


def _ndjson_record(number: int, line: bytes) -> Record:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        torn = "" if line.endswith(b"\n") else " (a torn last line?)"
        return Record(number, [], f"Invalid JSON: {exc}{torn}")
    if isinstance(value, dict) and isinstance(value.get("batch"), list):
        return Record(number, _unwrap_job(value), None)  # a RudderStack job line
    return Record(number, [value], None)


def _unwrap_job(job: dict[str, Any]) -> list[Any]:
    """A gateway job line's envelope gives its events their receivedAt and request_ip."""
    events: list[Any] = job["batch"]
    for event in events:
        if isinstance(event, dict):
            if "receivedAt" in job:
                event.setdefault("receivedAt", job["receivedAt"])
            if "requestIP" in job:
                event.setdefault("request_ip", job["requestIP"])
    return events


def prepare(raw: Any, file_hash: str, position: int, sub: int, now: datetime) -> dict[str, Any]:
    """Validate like the HTTP API, then enrich keeping the event's own time fields.

    An event without a usable messageId gets one derived from the file's content and the
    event's position, so importing the same file again matches the same rows.
    """
    event = validate(raw, None)
    message_id = event.get("messageId")
    if not isinstance(message_id, str) or not identifier(message_id):
        event["messageId"] = str(uuid.uuid5(_IDS, f"{file_hash}:{position}:{sub}"))
    return enrich(event, received_at=now, request_ip=None, sent_at=None, historical=True)


class FileImport:
    """One file's import: reads records past the checkpoint, yields whole micro-batches."""

    def __init__(self, path: Path, source: str, file_hash: str, start: int) -> None:
        self.path, self.source, self.file_hash, self.start = path, source, file_hash, start
        self.size = path.stat().st_size
        self.bytes_read = 0
        self.rejected: list[tuple[int, str]] = []

    def batches(
        self, batch_size: int, on_error: OnError, now: datetime
    ) -> Iterator[tuple[list[tuple[str, dict[str, Any]]], int, bool]]:
        """(events, position of the last record in them, last batch of the file).

        Batches end on whole records, so a checkpoint never splits a line.
        """
        raw, stream = open_file(self.path)
        with raw:
            fmt = detect(stream)
            pending: list[tuple[str, dict[str, Any]]] = []
            position = self.start
            for record in records(stream, fmt, self.start):
                self.bytes_read = raw.tell()
                if record.position <= self.start:
                    continue
                try:
                    if record.error is not None:
                        raise RequestRejected(record.error)
                    prepared = [
                        prepare(event, self.file_hash, record.position, sub, now)
                        for sub, event in enumerate(record.events)
                    ]
                except RequestRejected as exc:
                    reason = f"{self.path}:{record.position}: {exc}"
                    if on_error == "abort":
                        raise ImportAborted(reason) from None
                    self.rejected.append((record.position, str(exc)))
                    position = record.position
                    continue
                pending += [(self.source, event) for event in prepared]
                position = record.position
                if len(pending) >= batch_size:
                    yield pending, position, False
                    pending = []
            self.bytes_read = self.size
            yield pending, position, True


def log_progress(every: float = 5.0) -> Progress:
    """Progress as a log line at most every `every` seconds (when no terminal shows a bar)."""
    last = [0.0]

    def report(state: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] >= every or state.get("done"):
            last[0] = now
            logger.info(
                "Import: %s events, %.0f%% of %d bytes, %s",
                state["events"],
                100 * state["bytes"] / max(state["total_bytes"], 1),
                state["total_bytes"],
                state["file"],
            )

    return report


def write_rejects(target: IO[str], path: Path, rejected: list[tuple[int, str]]) -> None:
    for line, reason in rejected:
        target.write(orjson.dumps({"file": str(path), "line": line, "reason": reason}).decode())
        target.write("\n")


def now_utc() -> datetime:
    return datetime.now(UTC)


Load = Callable[[list[tuple[str, dict[str, Any]]], Checkpoint], Any]
"""Loads events and moves the file's checkpoint, in one transaction (Pipeline.import_batch)."""


def run(
    paths: Iterable[Path],
    *,
    source: str,
    on_error: OnError,
    rejects: Path | None,
    batch_size: int,
    load: Load,
    checkpoint_of: Callable[[str, str], Checkpoint | None],
    progress: Progress,
) -> Summary:
    """Import every file; a file's events commit in micro-batches with its checkpoint."""
    started = time.perf_counter()
    files = discover(paths)
    total_bytes = sum(path.stat().st_size for path in files)
    done_bytes = events = loaded = duplicates = rejected = resumed = skipped = 0
    tables: set[str] = set()
    reject_file = rejects.open("a", encoding="utf-8") if rejects is not None else None
    try:
        for path in files:
            file_hash = content_hash(path)
            previous = checkpoint_of(file_hash, source)
            if previous is not None and previous.completed:
                logger.info("%s was imported into %s already (same content): skipped", path, source)
                skipped += 1
                done_bytes += path.stat().st_size
                continue
            start = previous.position if previous is not None else 0
            if start:
                logger.info(
                    "Resuming %s from line %d (an earlier import stopped there)", path, start
                )
                resumed += 1
            file_import = FileImport(path, source, file_hash, start)
            file_events = previous.events if previous is not None else 0
            now = now_utc()
            for batch, position, last in file_import.batches(batch_size, on_error, now):
                # The rejects of the lines this batch covers are written before the batch's
                # checkpoint commits: a crash after it must not lose them.
                rejected += len(file_import.rejected)
                for line, reason in file_import.rejected:
                    logger.warning("%s:%d: %s (rejected)", path, line, reason)
                if reject_file is not None:
                    write_rejects(reject_file, path, file_import.rejected)
                    reject_file.flush()
                file_import.rejected.clear()
                file_events += len(batch)
                faults.point("import")
                result = load(
                    batch, Checkpoint(file_hash, source, str(path), position, file_events, last)
                )
                events += len(batch)
                loaded += result.events - result.duplicates
                duplicates += result.duplicates
                tables.update(result.rows)
                progress(
                    {
                        "file": str(path),
                        "events": events,
                        "bytes": done_bytes + file_import.bytes_read,
                        "total_bytes": total_bytes,
                    }
                )
            done_bytes += file_import.size
    finally:
        if reject_file is not None:
            reject_file.close()
    progress(
        {
            "file": "",
            "events": events,
            "bytes": total_bytes,
            "total_bytes": total_bytes,
            "done": True,
        }
    )
    return Summary(
        len(files),
        loaded,
        duplicates,
        rejected,
        sorted(tables),
        time.perf_counter() - started,
        resumed,
        skipped,
    )
