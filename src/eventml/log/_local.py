"""What the two embedded backends (memory, SQLite) share: partition choice and the consumer.

A local consumer group has one live member at a time, held by a lease (group, token, pid,
host). A second member is refused with :class:`~eventml.errors.GroupBusy` while the holder
lives; a holder that died (its pid is gone on this host, or it stopped renewing for
``LEASE_TTL_MS`` on another host) is taken over, so a restarted engine resumes after a
crash. Offset commits check the lease, so a member that lost it cannot commit (fencing).
Scale-out across processes is the Kafka backend's job.
"""

from __future__ import annotations

import abc
import os
import socket
import time
from collections.abc import Mapping, Sequence

from eventml.errors import GroupBusy, InputError, NotFound
from eventml.log.base import Batch, Consumer, Log, TopicPartition, partition_for

LEASE_TTL_MS = 30_000
HOST = socket.gethostname()


class Partitioner:
    """Picks partitions: all in one given partition, by key (murmur2), or rotating per batch."""

    def __init__(self) -> None:
        self._next = 0

    def assign(
        self,
        topic: str,
        count: int,
        keys: Sequence[bytes | None] | None,
        partition: int | None,
        partitions: int,
    ) -> list[int] | int:
        """One partition for the whole batch (an int), or one per value (a list)."""
        if partition is not None:
            if not 0 <= partition < partitions:
                raise InputError(
                    f"expected a partition in 0..{partitions - 1}, got {partition}",
                    where=f"append to topic {topic!r}",
                )
            return partition
        sticky = self._next % partitions
        self._next += 1
        if keys is None or partitions == 1:
            return sticky
        if len(keys) != count:
            raise InputError(
                f"expected one key per value ({count}), got {len(keys)} keys",
                where=f"append to topic {topic!r}",
            )
        return [sticky if k is None else partition_for(k, partitions) for k in keys]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_expired(pid: int, host: str, heartbeat_ms: int, now_ms: int) -> bool:
    """Whether a lease's holder is gone: dead pid on this host, or silent past the TTL."""
    if host == HOST:
        return not pid_alive(pid)
    return now_ms - heartbeat_ms > LEASE_TTL_MS


def busy_error(group: str, pid: int, host: str) -> GroupBusy:
    return GroupBusy(
        f"expected consumer group {group!r} to be free, got it held by pid {pid} on {host}; "
        "the embedded log runs one consumer per group (use another --group, or Kafka to scale out)"
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalLog(Log):
    """The primitives the local consumer needs from an embedded backend."""

    @abc.abstractmethod
    def _acquire(self, group: str, token: str) -> None:
        """Take the group's lease or raise :class:`GroupBusy`."""

    @abc.abstractmethod
    def _release(self, group: str, token: str) -> None:
        """Give the lease back (no error if already lost)."""

    @abc.abstractmethod
    def _commit(self, group: str, token: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit offsets if ``token`` still holds the lease, else raise :class:`GroupBusy`."""

    @abc.abstractmethod
    def _wait(self, timeout: float) -> None:
        """Sleep until something may have been appended, at most ``timeout`` seconds."""

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return LocalConsumer(self, group, topics)


class LocalConsumer(Consumer):
    """A consumer group member over a local backend; polls partitions round-robin."""

    def __init__(self, log: LocalLog, group: str, topics: Sequence[str]) -> None:
        if not group:
            raise InputError("expected a non-empty consumer group name, got ''")
        self._log = log
        self.group = group
        self.topics = tuple(topics)
        self._token = os.urandom(8).hex()
        self._positions: dict[TopicPartition, int] = {}
        self._rotation = 0
        self._closed = False
        log._acquire(group, self._token)
        self._refresh()

    def _refresh(self) -> None:
        """Pick up partitions of topics created since the last poll."""
        known = self._log.topics()
        for topic in self.topics:
            parts = known.get(topic, 0)
            if parts and (topic, parts - 1) not in self._positions:
                committed = self._log.committed(self.group, topic)
                for p in range(parts):
                    self._positions.setdefault((topic, p), committed.get(p, 0))

    def poll(self, max_records: int = 1000, timeout: float = 0.0) -> list[Batch]:
        if self._closed:
            raise InputError("expected an open consumer, got a closed one", where=self.group)
        deadline = time.monotonic() + timeout
        while True:
            self._refresh()
            batches = self._poll_once(max_records)
            remaining = deadline - time.monotonic()
            if batches or remaining <= 0:
                return batches
            self._log._wait(remaining)

    def _poll_once(self, max_records: int) -> list[Batch]:
        keys = list(self._positions)
        if not keys:
            return []
        self._rotation = (self._rotation + 1) % len(keys)
        batches: list[Batch] = []
        left = max_records
        for topic, part in keys[self._rotation :] + keys[: self._rotation]:
            if left <= 0:
                break
            batch = self._log.read(topic, part, self._positions[(topic, part)], limit=left)
            if batch.offsets:
                batches.append(batch)
                self._positions[(topic, part)] = batch.next_offset
                left -= len(batch.offsets)
        return batches

    def positions(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition) not in self._positions:
            raise NotFound(f"expected an assigned partition, got {topic}[{partition}]")
        self._positions[(topic, partition)] = offset

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._log._commit(self.group, self._token, offsets or self._positions)

    @property
    def token(self) -> str:
        """This member's lease token (used by transactions to fence zombies)."""
        return self._token

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log._release(self.group, self._token)
