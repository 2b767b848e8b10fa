"""The spool: durable appends, sealing, torn-tail recovery, quarantine (issue: ingestion)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loader.errors import Unavailable
from loader.spool import Spool, new_segment_id


def test_segment_ids_sort_in_creation_order() -> None:
    ids = [new_segment_id() for _ in range(1000)]
    assert ids == sorted(ids)


def test_append_then_seal_moves_segment_to_sealed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b'{"a":1}\n', b'{"a":2}\n'], 2)
    assert spool.open_events == 2
    segment_id = spool.seal()
    assert segment_id is not None
    assert spool.sealed() == [segment_id]
    assert spool.path(segment_id).read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert list((tmp_path / "open").iterdir()) == []
    assert spool.count_events() == 2


def test_seal_of_nothing_leaves_no_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.seal() is None
    assert spool.sealed() == []


def test_recover_cuts_torn_last_line_and_seals(tmp_path: Path) -> None:
    """A crash mid-write leaves a partial line: it was never acknowledged, so it is cut off."""
    spool = Spool(tmp_path)
    (tmp_path / "open" / "00000000000000000001-0000001-000000.jsonl").write_bytes(
        b'{"a":1}\n{"a":2}\n{"a":'
    )
    recovered = spool.recover()
    assert [r.torn_bytes for r in recovered] == [5]
    assert spool.path(recovered[0].segment_id).read_bytes() == b'{"a":1}\n{"a":2}\n'


def test_recover_drops_segment_with_only_a_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / "open" / "00000000000000000001-0000001-000000.jsonl").write_bytes(b'{"a"')
    assert spool.recover() == []
    assert spool.sealed() == []
    assert list((tmp_path / "open").iterdir()) == []


def test_failed_write_is_cut_back_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full mid-append: the segment is cut back to its last whole request, 503 follows."""
    spool = Spool(tmp_path)
    spool.append([b'{"a":1}\n'], 1)
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data)[:3] if calls["n"] == 1 else data)

    monkeypatch.setattr(os, "write", flaky_write)
    with pytest.raises(Unavailable, match="disk full"):
        spool.append([b'{"b":2}\n'], 1)
    monkeypatch.setattr(os, "write", real_write)
    segment_id = spool.seal()
    assert segment_id is not None
    assert spool.path(segment_id).read_bytes() == b'{"a":1}\n'
    assert spool.count_events() == 1


def test_fail_moves_segment_with_error_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"x\n"], 1)
    segment_id = spool.seal()
    assert segment_id is not None
    spool.fail(segment_id, "line 1 is not JSON")
    assert spool.sealed() == []
    assert (tmp_path / "failed" / f"{segment_id}.jsonl").read_bytes() == b"x\n"
    assert "line 1 is not JSON" in (tmp_path / "failed" / f"{segment_id}.error").read_text()
    assert spool.backlog().failed == 1


def test_complete_removes_sealed_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"x\n"], 1)
    segment_id = spool.seal()
    assert segment_id is not None
    spool.complete(segment_id)
    assert spool.sealed() == []
    assert spool.backlog().segments == 0


def test_backlog_skips_a_segment_removed_while_it_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader removes loaded segments at any time; a count racing it must not fail (a
    soak-test find: the FileNotFoundError became a 500)."""
    spool = Spool(tmp_path)
    for _ in range(2):
        spool.append([b"x\n"], 1)
        spool.seal()
    real_scandir = os.scandir
    first = spool.sealed()[0]

    def scandir_then_remove(path: Path) -> Iterator[os.DirEntry[str]]:
        entries = list(real_scandir(path))
        if Path(path) == spool.sealed_dir:
            spool.path(first).unlink()  # after listing, before stat: what the loader does
        return iter(entries)

    monkeypatch.setattr(os, "scandir", scandir_then_remove)
    assert spool.backlog().segments == 1
