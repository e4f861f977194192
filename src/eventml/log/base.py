"""The log contract: what every backend (memory, SQLite, Kafka) provides.

A log holds named topics; each topic has a fixed number of partitions; each partition is
an ordered sequence of entries numbered by gapless offsets from 0. An entry is a value
(bytes), an optional key (bytes) and an append timestamp in milliseconds that never
decreases within a partition (log-append time, as Kafka's ``LogAppendTime``), so reading
by time is a search over offsets.

The lifecycle is explicit: :meth:`Log.append` and :meth:`Log.read` for producers and
readers; :meth:`Log.consumer` for a consumer group that polls, tails with a timeout and
commits; :meth:`Log.transaction` to append outputs and commit input offsets atomically;
:meth:`Log.close`.

Partitioning: a value with a key goes to ``partition_for(key, n)`` (murmur2, the same
function as Kafka's Java producer, so the choice is stable across processes, machines,
Python versions and client languages); values without keys and without a partition go
to one partition per batch, rotating.

Writing a new backend: subclass :class:`Log` (and :class:`Consumer`,
:class:`Transaction`), register it under a URL scheme in the ``eventml.log`` entry-point
group, and run the conformance suite in ``tests/log/conformance.py`` against it (see
``tests/log/test_memory.py`` for the three lines it takes).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import NamedTuple, Self

from eventml.config import Settings


class Entry(NamedTuple):
    """One entry read back from a partition."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


class Batch(NamedTuple):
    """Consecutive entries of one partition, in columns (cheap to build and to decode).

    ``offsets[i]``, ``timestamps[i]``, ``keys[i]`` and ``values[i]`` describe entry ``i``.
    """

    topic: str
    partition: int
    offsets: Sequence[int]
    timestamps: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes]

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def next_offset(self) -> int:
        """The offset after the last entry: what a consumer commits once it is processed."""
        return self.offsets[-1] + 1

    def entries(self) -> Iterator[Entry]:
        """The batch as one :class:`Entry` per row."""
        for off, ts, key, value in zip(
            self.offsets, self.timestamps, self.keys, self.values, strict=True
        ):
            yield Entry(self.topic, self.partition, off, ts, key, value)


class Appended(NamedTuple):
    """Where appended values landed: ``partitions[i]`` and ``offsets[i]`` for value ``i``."""

    partitions: Sequence[int]
    offsets: Sequence[int]

    def __len__(self) -> int:
        return len(self.offsets)

    def positions(self) -> list[tuple[int, int]]:
        """``(partition, offset)`` per appended value."""
        return list(zip(self.partitions, self.offsets, strict=True))


class GroupLag(NamedTuple):
    """A consumer group's position on one partition."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Entries appended but not yet committed by the group."""
        return self.end - self.committed


TopicPartition = tuple[str, int]
"""A (topic, partition) pair."""


class Consumer(abc.ABC):
    """A member of a consumer group: polls its partitions and commits what it processed.

    Positions start at the group's committed offsets (0 for a new group). ``poll`` moves the
    in-memory position; nothing is committed until :meth:`commit` or a transaction's
    :meth:`Transaction.commit_offsets`.
    """

    group: str
    topics: tuple[str, ...]

    @abc.abstractmethod
    def poll(self, max_records: int = 1000, timeout: float = 0.0) -> list[Batch]:
        """Up to ``max_records`` new entries, waiting at most ``timeout`` seconds for the first."""

    @abc.abstractmethod
    def positions(self) -> dict[TopicPartition, int]:
        """The next offset this consumer will read, per assigned partition."""

    @abc.abstractmethod
    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Move the read position of one partition (nothing is committed)."""

    @abc.abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: the current positions) for the group."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group; uncommitted positions are forgotten."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Transaction(abc.ABC):
    """Appends and offset commits that become visible together, or not at all."""

    @abc.abstractmethod
    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        """Stage an append (see :meth:`Log.append`); its positions hold once committed."""

    @abc.abstractmethod
    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> None:
        """Stage a commit of ``consumer``'s group offsets."""


class Log(abc.ABC):
    """An append-only log of topics and partitions (see the module docstring)."""

    settings: Settings

    @abc.abstractmethod
    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create a topic (``settings.partitions`` partitions by default); existing is fine."""

    @abc.abstractmethod
    def topics(self) -> dict[str, int]:
        """Every topic and its partition count."""

    @abc.abstractmethod
    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        """Append values durably, in order; returns where each landed.

        ``keys[i]`` (if given) picks value ``i``'s partition; ``partition`` puts every value
        in that partition. Columns rather than message objects keep a batch of a thousand
        appends free of per-event Python objects. A topic that does not exist yet is
        created with the default partition count.
        """

    @abc.abstractmethod
    def read(
        self,
        topic: str,
        partition: int,
        start: int = 0,
        stop: int | None = None,
        limit: int | None = None,
    ) -> Batch:
        """Entries with ``start <= offset < stop`` (None: to the end), at most ``limit``."""

    @abc.abstractmethod
    def end_offsets(self, topic: str) -> list[int]:
        """The next offset of each partition (its entry count)."""

    @abc.abstractmethod
    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset whose timestamp is ``>= timestamp_ms`` (the end offset if none)."""

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        """Join consumer ``group`` on ``topics``, starting at its committed offsets."""

    @abc.abstractmethod
    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets per partition (0 where it never committed)."""

    @abc.abstractmethod
    def groups(self) -> list[GroupLag]:
        """Every consumer group's committed offset and lag on every partition it committed."""

    @abc.abstractmethod
    def transaction(self) -> TransactionContext:
        """A context manager: appends and offset commits inside it are atomic."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend; pending appends have been made durable."""

    # Built on the primitives above; backends may override for speed.

    def read_time(
        self, topic: str, partition: int, since_ms: int, until_ms: int | None = None
    ) -> Batch:
        """Entries appended at ``since_ms <= timestamp < until_ms``."""
        start = self.offset_for_time(topic, partition, since_ms)
        stop = None if until_ms is None else self.offset_for_time(topic, partition, until_ms)
        return self.read(topic, partition, start, stop)

    def read_all(self, topic: str, start_ms: int | None = None) -> Iterator[Batch]:
        """Every partition of a topic from the start (or from ``start_ms``), in chunks."""
        for partition, end in enumerate(self.end_offsets(topic)):
            pos = 0 if start_ms is None else self.offset_for_time(topic, partition, start_ms)
            while pos < end:
                batch = self.read(topic, partition, pos, end, limit=10_000)
                if not batch.offsets:
                    break
                yield batch
                pos = batch.next_offset

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class TransactionContext(abc.ABC):
    """What :meth:`Log.transaction` returns: ``with log.transaction() as tx: ...``."""

    @abc.abstractmethod
    def __enter__(self) -> Transaction: ...

    @abc.abstractmethod
    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as a signed 32-bit int (Java ``Utils.murmur2``).

    Written here because no maintained Python package exposes Kafka's exact variant, and
    matching it keeps our partitioning identical to Kafka's Java producer.

    >>> murmur2(b"21")
    -973932308
    """
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length - (length % 4)
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed message: ``toPositive(murmur2(key)) % partitions`` as Kafka.

    >>> [partition_for(k, 6) for k in (b"alice", b"bob", b"carol")]
    [3, 0, 2]
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
