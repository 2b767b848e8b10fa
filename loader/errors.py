"""Every error the project raises on purpose; messages name the value and say what to do."""

from __future__ import annotations


class LoaderError(Exception):
    """Base for every error raised on purpose."""


class ConfigError(LoaderError):
    """A setting, flag or environment variable has a value we cannot use."""


class RequestRejected(LoaderError):
    """The client's request is refused with a 400 and a one-line message (spec/http-api.md)."""


class Unauthorized(RequestRejected):
    """Missing or unknown write key; the message starts with the seed's phrase."""


class RequestTooLarge(RequestRejected):
    def __init__(self, detail: str) -> None:
        super().__init__(f"Request size too large: {detail}")


class InvalidJSON(RequestRejected):
    def __init__(self, detail: str) -> None:
        super().__init__(f"Invalid JSON: {detail}")


class InvalidEvent(RequestRejected):
    """One event of a request breaks a rule; `index` is its position in a batch (None: single call).

    `phrase` is the message's fixed start from the error table of spec/http-api.md.
    """

    def __init__(self, phrase: str, index: int | None, detail: str = "") -> None:
        self.phrase, self.index, self.detail = phrase, index, detail
        where = f" at batch index {index}" if index is not None else ""
        tail = f": {detail}" if detail else ""
        super().__init__(f"{phrase}{where}{tail}")


class Unavailable(LoaderError):
    """The spool cannot take events now (disk full, backlog over its bound): 503 + Retry-After."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        self.reason, self.retry_after = reason, retry_after
        super().__init__(f"Service unavailable: {reason}. Retry after {retry_after} s.")


class TransientError(LoaderError):
    """Disk full, DuckDB busy: retry the same segment later; nothing is lost."""


class TerminalError(LoaderError):
    """Data that can never load (corrupt segment): quarantine it in failed/ and go on."""


class SegmentCorrupt(TerminalError):
    def __init__(self, segment_id: str, line: int, reason: str) -> None:
        self.segment_id, self.line = segment_id, line
        super().__init__(
            f"Segment `{segment_id}` line {line}: {reason}. It is kept in failed/; "
            "fix or delete it, then run `loader flush`."
        )


class SourceError(LoaderError):
    """A `loader sources` command names a source that does not exist, or one that already does."""


class AdminUnavailable(LoaderError):
    """The running server's admin endpoint could not be reached or refused us."""
