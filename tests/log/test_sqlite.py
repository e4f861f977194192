from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventml.config import Settings
from eventml.errors import LogUnavailable
from eventml.log import Log, open_log
from eventml.log._sqlite import SqliteLog
from tests.log.conformance import LogConformance


class TestSqliteLog(LogConformance):
    @pytest.fixture
    def log(self, tmp_path: Path) -> Iterator[Log]:
        with open_log(str(tmp_path / "data"), Settings(partitions=1)) as log:
            yield log


def test_urls_pick_folder_or_file(tmp_path: Path) -> None:
    folder = open_log(str(tmp_path / "d"), Settings())
    assert isinstance(folder, SqliteLog)
    assert folder.path == tmp_path / "d" / "log.sqlite"
    file = open_log(f"sqlite:///{tmp_path}/x.db", Settings())
    assert isinstance(file, SqliteLog)
    assert file.path == tmp_path / "x.db"
    folder.close()
    file.close()


def test_everything_survives_reopening(tmp_path: Path) -> None:
    with open_log(str(tmp_path), Settings(partitions=2)) as log:
        log.append("t", [b"a", b"b"], keys=[b"k1", b"k2"])
        with log.consumer("g", ["t"]) as c:
            c.poll(1)
            c.commit()
    with open_log(str(tmp_path), Settings()) as log:
        assert log.topics() == {"t": 2}
        assert sorted(v for p in range(2) for v in log.read("t", p).values) == [b"a", b"b"]
        assert sum(log.committed("g", "t").values()) == 1


def test_journal_is_wal(tmp_path: Path) -> None:
    with SqliteLog(str(tmp_path), Settings()) as log:
        assert log._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_wal_starts_over_while_a_writer_keeps_appending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PASSIVE checkpoints alone never let the WAL start over under a writer that keeps
    # appending (each ends after the next append began); past the restart size a RESTART
    # checkpoint does, so the WAL file stops growing.
    import eventml.log._sqlite as sqlite_log

    monkeypatch.setattr(sqlite_log, "_CHECKPOINT_BYTES", 256 << 10)
    monkeypatch.setattr(sqlite_log, "_RESTART_BYTES", 1 << 20)
    value = b"x" * (64 << 10)
    with SqliteLog(str(tmp_path), Settings()) as log:
        wal = Path(f"{log.path}-wal")
        for _ in range(512):  # 128 MiB
            log.append("t", [value] * 4)
        size = wal.stat().st_size
        assert log.end_offsets("t") == [2048]
        assert list(log.read("t", 0, 2040).values) == [value] * 8
    assert size < 16 << 20, size


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LogUnavailable, match="expected a writable SQLite log, got"):
        SqliteLog(str(blocker / "sub"), Settings())
