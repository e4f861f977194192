"""The in-memory log (``memory://``): for unit tests; same contract as SQLite, nothing kept.

``memory://`` opens a fresh log; ``memory://NAME`` opens the log called NAME in this
process, shared by everyone who opens that name (until the process ends).
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

from eventml.config import Settings
from eventml.errors import InputError, NotFound
from eventml.log._local import LocalConsumer, LocalLog, Partitioner, busy_error, now_ms
from eventml.log.base import (
    Appended,
    Batch,
    Consumer,
    GroupLag,
    TopicPartition,
    Transaction,
    TransactionContext,
)


class _Partition:
    __slots__ = ("keys", "timestamps", "values")

    def __init__(self) -> None:
        self.timestamps: list[int] = []
        self.keys: list[bytes | None] = []
        self.values: list[bytes] = []


class _Store:
    """The state of one memory log; guarded by ``cond``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.topics: dict[str, list[_Partition]] = {}
        self.offsets: dict[tuple[str, str], dict[int, int]] = {}
        self.leases: dict[str, str] = {}


_named: dict[str, _Store] = {}
_named_lock = threading.Lock()


class MemoryLog(LocalLog):
    """A log held in this process's memory."""

    def __init__(self, settings: Settings | None = None, name: str = "") -> None:
        self.settings = settings or Settings.from_env()
        if name:
            with _named_lock:
                self._store = _named.setdefault(name, _Store())
        else:
            self._store = _Store()
        self._partitioner = Partitioner()

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> MemoryLog:
        return cls(settings, name=url.partition("://")[2].strip("/"))

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        n = partitions or self.settings.partitions
        if n < 1:
            raise InputError(f"expected at least 1 partition, got {n}", where=f"topic {name!r}")
        with self._store.cond:
            self._store.topics.setdefault(name, [_Partition() for _ in range(n)])

    def topics(self) -> dict[str, int]:
        with self._store.cond:
            return {name: len(parts) for name, parts in self._store.topics.items()}

    def _partition(self, topic: str, partition: int) -> _Partition:
        parts = self._store.topics.get(topic)
        if parts is None:
            raise NotFound(f"expected an existing topic, got {topic!r}")
        if not 0 <= partition < len(parts):
            raise NotFound(
                f"expected a partition in 0..{len(parts) - 1}, got {partition}",
                where=f"topic {topic!r}",
            )
        return parts[partition]

    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        with self.transaction() as tx:
            return tx.append(topic, values, keys, partition)

    def _append_locked(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partition: int | None,
    ) -> Appended:
        if topic not in self._store.topics:
            self._store.topics[topic] = [_Partition() for _ in range(self.settings.partitions)]
        parts = self._store.topics[topic]
        chosen = self._partitioner.assign(topic, len(values), keys, partition, len(parts))
        per_value = [chosen] * len(values) if isinstance(chosen, int) else chosen
        stamp = now_ms()
        offsets: list[int] = []
        for i, p in enumerate(per_value):
            part = parts[p]
            offsets.append(len(part.values))
            part.timestamps.append(max(stamp, part.timestamps[-1]) if part.timestamps else stamp)
            part.keys.append(None if keys is None else keys[i])
            part.values.append(bytes(values[i]))
        return Appended(per_value, offsets)

    def read(
        self,
        topic: str,
        partition: int,
        start: int = 0,
        stop: int | None = None,
        limit: int | None = None,
    ) -> Batch:
        with self._store.cond:
            part = self._partition(topic, partition)
            end = len(part.values) if stop is None else min(stop, len(part.values))
            start = max(start, 0)
            if limit is not None:
                end = min(end, start + limit)
            return Batch(
                topic,
                partition,
                range(start, max(start, end)),
                part.timestamps[start:end],
                part.keys[start:end],
                part.values[start:end],
            )

    def end_offsets(self, topic: str) -> list[int]:
        with self._store.cond:
            parts = self._store.topics.get(topic)
            if parts is None:
                raise NotFound(f"expected an existing topic, got {topic!r}")
            return [len(p.values) for p in parts]

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        with self._store.cond:
            return bisect.bisect_left(self._partition(topic, partition).timestamps, timestamp_ms)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._store.cond:
            return dict(self._store.offsets.get((group, topic), {}))

    def groups(self) -> list[GroupLag]:
        with self._store.cond:
            out = []
            for (group, topic), offsets in sorted(self._store.offsets.items()):
                parts = self._store.topics.get(topic, [])
                for p, off in sorted(offsets.items()):
                    end = len(parts[p].values) if p < len(parts) else off
                    out.append(GroupLag(group, topic, p, off, end))
            return out

    def transaction(self) -> TransactionContext:
        return _MemoryTransaction(self)

    def _acquire(self, group: str, token: str) -> None:
        with self._store.cond:
            holder = self._store.leases.get(group)
            if holder is not None:
                raise busy_error(group, os.getpid(), "this process")
            self._store.leases[group] = token

    def _release(self, group: str, token: str) -> None:
        with self._store.cond:
            if self._store.leases.get(group) == token:
                del self._store.leases[group]

    def _commit(self, group: str, token: str, offsets: Mapping[TopicPartition, int]) -> None:
        with self._store.cond:
            self._commit_locked(group, token, offsets)

    def _commit_locked(self, group: str, token: str, offsets: Mapping[TopicPartition, int]) -> None:
        if self._store.leases.get(group) != token:
            raise busy_error(group, os.getpid(), "this process")
        for (topic, p), off in offsets.items():
            self._store.offsets.setdefault((group, topic), {})[p] = off

    def _wait(self, timeout: float) -> None:
        with self._store.cond:
            self._store.cond.wait(timeout)

    def close(self) -> None:
        with self._store.cond:
            self._store.cond.notify_all()


class _MemoryTransaction(TransactionContext, Transaction):
    """Stages appends and commits, applies them under the store's lock on success."""

    def __init__(self, log: MemoryLog) -> None:
        self._log = log
        self._lengths: dict[TopicPartition, int] = {}
        self._commits: list[tuple[str, str, Mapping[TopicPartition, int]]] = []

    def __enter__(self) -> Transaction:
        self._log._store.cond.acquire()
        return self

    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        # Applied at once while the lock is held; truncated back in __exit__ on failure.
        store = self._log._store
        for p, part in enumerate(store.topics.get(topic, [])):
            self._lengths.setdefault((topic, p), len(part.values))
        out = self._log._append_locked(topic, values, keys, partition)
        for p in range(len(store.topics[topic])):
            self._lengths.setdefault((topic, p), 0)
        return out

    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        if not isinstance(consumer, LocalConsumer):
            raise InputError(f"expected a consumer of this log, got {type(consumer).__name__}")
        self._commits.append((consumer.group, consumer.token, dict(offsets)))

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        store = self._log._store
        try:
            if et is None:
                try:
                    for group, token, offsets in self._commits:
                        self._log._commit_locked(group, token, offsets)
                except BaseException:
                    self._undo()
                    raise
                store.cond.notify_all()
            else:
                self._undo()
        finally:
            store.cond.release()

    def _undo(self) -> None:
        """Truncate every partition this transaction appended to back to its old length."""
        for (topic, p), length in self._lengths.items():
            part = self._log._store.topics[topic][p]
            del part.timestamps[length:], part.keys[length:], part.values[length:]
