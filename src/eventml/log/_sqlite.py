"""The embedded log (the default): one SQLite file in WAL mode, safe for many processes.

Layout: a ``topics`` table (id, name, partitions); one table per partition,
``p{topic_id}_{partition}(off INTEGER PRIMARY KEY, ts, key, value)``, so the offset is
the rowid and an append is one B-tree append, as cheap as a plain insert; ``offsets``
(group, topic, partition → next offset) and ``leases`` (one live member per group).

Every append runs in ``BEGIN IMMEDIATE``: the writer lock serializes appenders across
processes, so offsets (max + 1) are unique and gapless; a killed process leaves either
its whole transaction or nothing. ``synchronous=NORMAL`` (the default) survives a
process crash; ``EVENTML_SQLITE_SYNC=full`` also survives power loss. Checkpoints (copying
the WAL back into the database) run on a thread of their own (:class:`_Checkpointer`).
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from eventml.config import Settings
from eventml.errors import InputError, LogUnavailable, NotFound
from eventml.log._local import (
    HOST,
    LocalConsumer,
    LocalLog,
    Partitioner,
    busy_error,
    lease_expired,
    now_ms,
)
from eventml.log.base import (
    Appended,
    Batch,
    Consumer,
    GroupLag,
    TopicPartition,
    Transaction,
    TransactionContext,
)

DB_NAME = "log.sqlite"
_CHECKPOINT_BYTES = 4 << 20  # SQLite's own automatic checkpoint: 1,000 pages of 4 KiB
_RESTART_BYTES = 256 << 20  # a WAL longer than this is started again from its beginning
_FILE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS offsets(
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases(
    grp TEXT PRIMARY KEY, token TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, heartbeat_ms INTEGER NOT NULL);
"""


def db_path(location: str) -> Path:
    """The database file for a folder or file location (a folder gets ``log.sqlite``)."""
    path = Path(location).expanduser()
    if path.suffix in _FILE_SUFFIXES or path.is_file():
        return path
    return path / DB_NAME


class SqliteLog(LocalLog):
    """The embedded log in one SQLite file."""

    def __init__(self, location: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.path = db_path(location)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=60.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={self.settings.sqlite_sync.upper()}")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            with self._write() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise LogUnavailable(
                f"expected a writable SQLite log, got {type(exc).__name__}: {exc}",
                where=str(self.path),
            ) from exc
        self._lock = threading.RLock()
        self._checkpointer = _Checkpointer(self.path)
        self._tables: dict[str, tuple[int, int]] = {}
        self._partitioner = Partitioner()

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> SqliteLog:
        """A bare path, ``sqlite:///relative`` or ``sqlite:////absolute`` (as SQLAlchemy)."""
        if "://" not in url:
            return cls(url, settings)
        rest = url.partition("://")[2]
        return cls(rest[1:] if rest.startswith("/") else rest or ".", settings)

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _topic(self, name: str, create: bool, cur: sqlite3.Cursor | None = None) -> tuple[int, int]:
        """(topic id, partitions), from cache or the database; creates it if asked."""
        found = self._tables.get(name)
        if found is not None:
            return found
        c = cur or self._db.cursor()
        row = c.execute("SELECT id, partitions FROM topics WHERE name = ?", (name,)).fetchone()
        if row is None:
            if not create:
                raise NotFound(f"expected an existing topic, got {name!r}", where=str(self.path))
            if cur is None:
                with self._write() as wc:
                    return self._topic(name, True, wc)
            row = self._create(c, name, self.settings.partitions)
        self._tables[name] = (row[0], row[1])
        return self._tables[name]

    def _create(self, cur: sqlite3.Cursor, name: str, partitions: int) -> tuple[int, int]:
        row = cur.execute("SELECT id, partitions FROM topics WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return (row[0], row[1])
        cur.execute(
            "INSERT INTO topics(name, partitions, created_ms) VALUES (?, ?, ?)",
            (name, partitions, now_ms()),
        )
        tid = cur.lastrowid
        assert tid is not None  # sqlite always sets lastrowid after an INSERT
        for p in range(partitions):
            cur.execute(
                f"CREATE TABLE p{tid}_{p}(off INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
                "key BLOB, value BLOB NOT NULL)"
            )
        return (tid, partitions)

    def _table(self, topic: str, partition: int) -> str:
        tid, parts = self._topic(topic, create=False)
        if not 0 <= partition < parts:
            raise NotFound(
                f"expected a partition in 0..{parts - 1}, got {partition}", where=f"topic {topic!r}"
            )
        return f"p{tid}_{partition}"

    # -- the Log contract ----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        n = partitions or self.settings.partitions
        if n < 1:
            raise InputError(f"expected at least 1 partition, got {n}", where=f"topic {name!r}")
        with self._lock, self._write() as cur:
            self._tables[name] = self._create(cur, name, n)

    def topics(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, partitions FROM topics ORDER BY id").fetchall()
        return {name: parts for name, parts in rows}

    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        with self.transaction() as tx:
            return tx.append(topic, values, keys, partition)

    def _append(
        self,
        cur: sqlite3.Cursor,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partition: int | None,
    ) -> Appended:
        tid, parts = self._topic(topic, create=True, cur=cur)
        chosen = self._partitioner.assign(topic, len(values), keys, partition, parts)
        if isinstance(chosen, int):
            start = self._insert(cur, tid, chosen, values, keys)
            return Appended((chosen,) * len(values), range(start, start + len(values)))
        by_part: dict[int, list[int]] = {}
        for i, p in enumerate(chosen):
            by_part.setdefault(p, []).append(i)
        offsets = [0] * len(values)
        assert keys is not None  # a per-value choice is only made from keys
        for p, idx in by_part.items():
            start = self._insert(cur, tid, p, [values[i] for i in idx], [keys[i] for i in idx])
            for j, i in enumerate(idx):
                offsets[i] = start + j
        return Appended(chosen, offsets)

    def _insert(
        self,
        cur: sqlite3.Cursor,
        tid: int,
        partition: int,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
    ) -> int:
        """Append to one partition table; returns the first new offset."""
        table = f"p{tid}_{partition}"
        last = cur.execute(f"SELECT off, ts FROM {table} ORDER BY off DESC LIMIT 1").fetchone()
        stamp = now_ms()
        start, ts = (0, stamp) if last is None else (last[0] + 1, max(stamp, last[1]))
        offsets = range(start, start + len(values))
        self._checkpointer.wrote(sum(map(len, values)))
        if keys is None:  # the common case: one bound parameter fewer per row
            cur.executemany(
                f"INSERT INTO {table}(off, ts, value) VALUES (?, {ts}, ?)",
                zip(offsets, values, strict=True),
            )
        else:
            cur.executemany(
                f"INSERT INTO {table}(off, ts, key, value) VALUES (?, {ts}, ?, ?)",
                zip(offsets, keys, values, strict=True),
            )
        return start

    def read(
        self,
        topic: str,
        partition: int,
        start: int = 0,
        stop: int | None = None,
        limit: int | None = None,
    ) -> Batch:
        with self._lock:
            table = self._table(topic, partition)
            start = max(start, 0)
            rows = self._db.execute(
                f"SELECT value FROM {table} WHERE off >= ? AND off < ? ORDER BY off LIMIT ?",
                (start, (1 << 62) if stop is None else stop, -1 if limit is None else limit),
            ).fetchall()
        if not rows:
            return Batch(topic, partition, range(start, start), (), (), ())
        # Offsets are gapless, so the rows are exactly start, start + 1, ...; timestamps and
        # keys (rarely read) are fetched on first use: the rows never change once written.
        end = start + len(rows)
        return Batch(
            topic,
            partition,
            range(start, end),
            _Column(self, table, "ts", start, end),
            _Column(self, table, "key", start, end),
            list(map(_first, rows)),
        )

    def end_offsets(self, topic: str) -> list[int]:
        with self._lock:
            tid, parts = self._topic(topic, create=False)
            out = []
            for p in range(parts):
                row = self._db.execute(f"SELECT max(off) FROM p{tid}_{p}").fetchone()
                out.append(0 if row[0] is None else row[0] + 1)
            return out

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        # Timestamps never decrease within a partition: binary search by rowid lookups.
        with self._lock:
            table = self._table(topic, partition)
            row = self._db.execute(f"SELECT max(off) FROM {table}").fetchone()
            lo, hi = 0, (0 if row[0] is None else row[0] + 1)
            while lo < hi:
                mid = (lo + hi) // 2
                (ts,) = self._db.execute(f"SELECT ts FROM {table} WHERE off = ?", (mid,)).fetchone()
                if ts < timestamp_ms:
                    lo = mid + 1
                else:
                    hi = mid
            return lo

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, next FROM offsets WHERE grp = ? AND topic = ?", (group, topic)
            ).fetchall()
        return {p: off for p, off in rows}

    def groups(self) -> list[GroupLag]:
        with self._lock:
            rows = self._db.execute(
                "SELECT grp, topic, partition, next FROM offsets ORDER BY grp, topic, partition"
            ).fetchall()
            ends = {t: self.end_offsets(t) for t in {r[1] for r in rows} if t in self.topics()}
        return [
            GroupLag(g, t, p, off, ends[t][p] if t in ends and p < len(ends[t]) else off)
            for g, t, p, off in rows
        ]

    def transaction(self) -> TransactionContext:
        return _SqliteTransaction(self)

    # -- consumer groups -----------------------------------------------------------------

    def _acquire(self, group: str, token: str) -> None:
        with self._lock, self._write() as cur:
            row = cur.execute(
                "SELECT pid, host, heartbeat_ms FROM leases WHERE grp = ?", (group,)
            ).fetchone()
            stamp = now_ms()
            if row is not None and not lease_expired(row[0], row[1], row[2], stamp):
                raise busy_error(group, row[0], row[1])
            cur.execute(
                "INSERT OR REPLACE INTO leases(grp, token, pid, host, heartbeat_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (group, token, os.getpid(), HOST, stamp),
            )

    def _release(self, group: str, token: str) -> None:
        with self._lock, self._write() as cur:
            cur.execute("DELETE FROM leases WHERE grp = ? AND token = ?", (group, token))

    def _commit(self, group: str, token: str, offsets: Mapping[TopicPartition, int]) -> None:
        with self._lock, self._write() as cur:
            self._commit_in(cur, group, token, offsets)

    def _commit_in(
        self, cur: sqlite3.Cursor, group: str, token: str, offsets: Mapping[TopicPartition, int]
    ) -> None:
        stamp = now_ms()
        cur.execute(
            "UPDATE leases SET heartbeat_ms = ? WHERE grp = ? AND token = ?", (stamp, group, token)
        )
        if cur.rowcount != 1:
            row = cur.execute("SELECT pid, host FROM leases WHERE grp = ?", (group,)).fetchone()
            raise busy_error(group, *(row or (0, "nobody")))
        cur.executemany(
            "INSERT OR REPLACE INTO offsets(grp, topic, partition, next, updated_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            [(group, t, p, off, stamp) for (t, p), off in offsets.items()],
        )

    def _wait(self, timeout: float) -> None:
        # SQLite cannot notify across processes; poll the file's change counter.
        deadline = time.monotonic() + timeout
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        delay = 0.001
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)
            with self._lock:
                if self._db.execute("PRAGMA data_version").fetchone()[0] != version:
                    return

    def close(self) -> None:
        self._checkpointer.close()
        with self._lock:
            self._db.close()


_first = operator.itemgetter(0)


class _Checkpointer:
    """Copies the WAL back into the database on a thread and a connection of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages, on
    the committing thread: the writer pays for copying the pages a second time and for the
    fsyncs, a tenth of the stream engine's time. Here a writer only counts the bytes it
    appends; past 4 MiB it wakes this thread, whose PASSIVE checkpoint (it never blocks a
    writer or a reader) runs in SQLite's C code without the GIL, on another core. Other
    processes' connections keep SQLite's automatic checkpoints.

    PASSIVE checkpoints never let the WAL start again from its beginning while a writer
    keeps appending (a write starts the WAL over only just after a checkpoint that caught
    up): it would grow without end (a 1M-record stream ended with a 1.9 GB WAL beside a
    1.9 GB database). So after every :data:`_RESTART_BYTES` appended, the writer itself runs
    a RESTART checkpoint after its commit (:meth:`restart_due`): the pages this thread
    copied already are not copied again, and the next write starts the WAL over. It waits
    for this thread's round to end, at most 5 ms for readers (another process's), and is
    tried again 4 MiB later if it could not finish. That commit takes 15–70 ms longer
    (copying what the last round left and two fsyncs, measured here): a stream of 1 KB
    events pays it every 256 MiB, a few seconds apart at full speed.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pending = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._unrestarted = 0  # bytes appended since the WAL last started over
        self._checkpointing = threading.Lock()  # one checkpoint at a time (SQLite's rule)

    def wrote(self, size: int) -> None:
        self._pending += size
        self._unrestarted += size
        if self._pending < _CHECKPOINT_BYTES or self._closing:
            return
        self._pending = 0
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="eventml-checkpoint", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def restart_due(self, db: sqlite3.Connection) -> None:
        """After a commit on the writer's connection ``db``: start the WAL over if it is due."""
        if self._unrestarted < _RESTART_BYTES:
            return
        with self._checkpointing:  # this thread's PASSIVE round would make it busy
            db.execute("PRAGMA busy_timeout = 5")
            try:
                busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error:
                busy = 1  # nothing is lost: the pages stay in the WAL
            finally:
                db.execute("PRAGMA busy_timeout = 60000")
        self._unrestarted = _RESTART_BYTES - _CHECKPOINT_BYTES if busy else 0

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=60.0, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                # a failed checkpoint loses nothing: the pages stay in the WAL for the next
                with self._checkpointing, contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread (closing the log's last connection checkpoints what is left)."""
        self._closing = True
        if self._thread is not None:
            self._wake.set()
            self._thread.join()


class _Column(Sequence[Any]):
    """One column of a read range, queried when first used."""

    def __init__(self, log: SqliteLog, table: str, column: str, start: int, end: int) -> None:
        self._args = (log, table, column, start, end)
        self._values: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._values is None:
            log, table, column, start, end = self._args
            with log._lock:
                rows = log._db.execute(
                    f"SELECT {column} FROM {table} WHERE off >= ? AND off < ? ORDER BY off",
                    (start, end),
                ).fetchall()
            self._values = list(map(_first, rows))
        return self._values

    def __len__(self) -> int:
        return self._args[4] - self._args[3]

    def __getitem__(self, i: Any) -> Any:
        return self._load()[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._load())


class _SqliteTransaction(TransactionContext, Transaction):
    """``BEGIN IMMEDIATE`` … ``COMMIT``: appends and offset commits land together."""

    def __init__(self, log: SqliteLog) -> None:
        self._log = log

    def __enter__(self) -> Transaction:
        self._log._lock.acquire()
        try:
            self._cur = self._log._db.cursor()
            self._cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._log._lock.release()
            raise LogUnavailable(
                f"expected to lock the log for writing, got {exc}", where=str(self._log.path)
            ) from exc
        except BaseException:
            self._log._lock.release()
            raise
        return self

    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        return self._log._append(self._cur, topic, values, keys, partition)

    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        if not isinstance(consumer, LocalConsumer):
            raise InputError(f"expected a consumer of this log, got {type(consumer).__name__}")
        self._log._commit_in(self._cur, consumer.group, consumer.token, offsets)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if et is None:
                try:
                    self._cur.execute("COMMIT")
                except BaseException:
                    self._cur.execute("ROLLBACK")
                    self._log._tables.clear()
                    raise
                self._log._checkpointer.restart_due(self._log._db)
            else:
                self._cur.execute("ROLLBACK")
                # Topics created inside a rolled-back transaction are gone again.
                self._log._tables.clear()
        finally:
            self._log._lock.release()
