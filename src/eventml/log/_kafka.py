"""The Kafka log (``kafka://host:port[,host:port][?timeout=SECONDS]``), over confluent-kafka.

How the contract maps onto Kafka:

- Topics are created with the AdminClient (``settings.replication`` replicas,
  ``message.timestamp.type=LogAppendTime`` so timestamps never decrease within a
  partition, ``retention.ms=-1`` for ``models``); appending to a missing topic creates it
  with ``settings.partitions`` partitions, as the embedded backends do.
- ``append`` is synchronous and durable: an idempotent producer with ``acks=all``, flushed
  before it returns; partitions and offsets come from the delivery reports. The partition
  is always chosen here (:class:`~eventml.log._local.Partitioner`: murmur2 of the key,
  or one rotating partition per keyless batch) and set explicitly on each message, so it
  never depends on librdkafka's partitioner.
- Offsets are strictly increasing but not gapless: a transaction's commit or abort marker
  takes an offset, and so do aborted records, which ``read_committed`` readers never see.
- ``read`` and every consumer use ``isolation.level=read_committed``; ``end_offsets`` is
  the last stable offset (what a ``read_committed`` reader can reach).
- Consumer groups are Kafka's: a second member shares the partitions (cooperative
  rebalancing) instead of :class:`~eventml.errors.GroupBusy`; see ``_kafka_consumer.py``.
- ``transaction()`` uses one transactional producer per :class:`KafkaLog`; a member that
  lost its group cannot commit offsets in it (:class:`~eventml.errors.GroupBusy`).
- A broker that does not answer within ``timeout`` seconds (default 10) is
  :class:`~eventml.errors.LogUnavailable` naming its address, never a hang.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import (
    Consumer as RawConsumer,
)
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

# The admin package re-exports these without __all__; they are its documented public API.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from eventml.config import Settings
from eventml.errors import EventmlError, InputError, LogError, LogUnavailable, NotFound
from eventml.log._kafka_common import (
    LOGGER,
    KafkaUrl,
    client_config,
    is_settle,
    mapped,
)
from eventml.log._local import Partitioner
from eventml.log.base import (
    Appended,
    Batch,
    Consumer,
    GroupLag,
    Log,
    TransactionContext,
)
from eventml.log.base import (
    TopicPartition as TP,
)

RECORD_OVERHEAD = 100
"""Bytes a record batch adds around one value and key (61-byte header plus varints)."""

STABLE_WAIT = 2.0
"""Seconds ``committed`` waits for a group's offsets held by a transaction being completed."""

PROBE_TIMEOUT = 5.0
"""Seconds :class:`KafkaLog` waits for the broker's first answer when it opens."""

TRANSACTION_TIMEOUT_MS = 10_000
"""``transaction.timeout.ms`` of the transactional producer (at least the URL timeout).

A process that dies inside a transaction leaves it open until the broker aborts it after
this long; until then the partitions it wrote and the offsets it committed are held back
(the new owner of its partitions waits). librdkafka's default is 60 s; 10 s is Kafka
Streams' default under exactly-once. A transaction is only the appends and the commit of
one batch (the engine scores before it begins), so it never needs longer.
"""

if TYPE_CHECKING:
    from eventml.log._kafka_tx import Unsettled

_T = TypeVar("_T")
_instances = itertools.count()


class KafkaLog(Log):
    """A log on a Kafka cluster; one idempotent producer, one transactional producer."""

    def __init__(self, servers: str, settings: Settings | None = None, timeout: float = 10.0):
        self.settings = settings or Settings.from_env()
        self.servers = servers
        self.timeout = timeout
        self._admin = AdminClient(client_config(servers, timeout, error_cb=_log_error))
        self._partitioner = Partitioner()
        self._parts: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._tx_lock = threading.RLock()
        self._producer: Producer | None = None
        self._tx_producer: Producer | None = None
        self._tx_cut = False  # the transactional producer lost its brokers since its init
        self._reader: RawConsumer | None = None
        self._tx_id = f"eventml-{socket.gethostname()}-{os.getpid()}-{next(_instances)}"
        self.unsettled: Unsettled | None = None
        """This log's last transaction, while its markers are not known to be written."""
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        self._closed = False
        probe = min(timeout, PROBE_TIMEOUT)
        try:
            meta = self._admin.list_topics(timeout=probe)
        except KafkaException as exc:
            raise LogUnavailable(
                f"expected a Kafka broker at {servers}, got no answer within {probe:g} s "
                f"({exc.args[0].str() if exc.args else exc})",
                where=f"kafka://{servers}",
            ) from exc
        broker = str(next(iter(meta.brokers)))
        config = self._wait(
            self._admin.describe_configs(
                [ConfigResource(ResourceType.BROKER, broker)], request_timeout=timeout
            ),
            "describe the broker's configuration",
        )
        entries = next(iter(config.values()))
        self.max_message_bytes = int(entries["message.max.bytes"].value)
        """The broker's ``message.max.bytes``: the largest record batch it accepts."""
        self.transaction_timeout_ms = max(TRANSACTION_TIMEOUT_MS, int(timeout * 1000))
        """How long the broker lets a transaction stay open before it aborts it."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> KafkaLog:
        parsed = KafkaUrl.parse(url)
        return cls(parsed.servers, settings, parsed.timeout)

    # -- plumbing ------------------------------------------------------------------------

    def _wait(
        self, futures: dict[Any, concurrent.futures.Future[Any]], doing: str
    ) -> dict[Any, Any]:
        """Resolve AdminClient futures, mapping failures to eventml errors."""
        out: dict[Any, Any] = {}
        for key, future in futures.items():
            try:
                out[key] = future.result(timeout=self.timeout + 5)
            except KafkaException as exc:
                raise mapped(exc, self.servers, doing) from exc
            except concurrent.futures.TimeoutError as exc:
                raise LogUnavailable(
                    f"expected the Kafka broker at {self.servers} to {doing}, "
                    f"got no answer within {self.timeout:g} s",
                    where=f"kafka://{self.servers}",
                ) from exc
        return out

    def _call(self, fn: Callable[[], _T], doing: str) -> _T:
        try:
            return fn()
        except KafkaException as exc:
            raise mapped(exc, self.servers, doing) from exc

    def _metadata_partitions(self, topic: str) -> int | None:
        meta = self._call(
            lambda: self._admin.list_topics(topic=topic, timeout=self.timeout),
            f"describe topic {topic!r}",
        )
        found = meta.topics.get(topic)
        if found is None:
            return None
        err = found.error
        if err is not None:
            if err.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise mapped(err, self.servers, f"describe topic {topic!r}")
            return None
        return len(found.partitions)

    def _partitions(self, topic: str, create: bool = False) -> int:
        """The topic's partition count (cached), creating the topic if asked."""
        found = self._parts.get(topic)
        if found is not None:
            return found
        n = self._metadata_partitions(topic)
        if n is None:
            if not create:
                raise NotFound(
                    f"expected an existing topic, got {topic!r}", where=f"kafka://{self.servers}"
                )
            self.create_topic(topic)
            return self._parts[topic]
        self._parts[topic] = n
        return n

    def _require(self, topic: str, partition: int) -> None:
        parts = self._partitions(topic)
        if not 0 <= partition < parts:
            raise NotFound(
                f"expected a partition in 0..{parts - 1}, got {partition}", where=f"topic {topic!r}"
            )

    def _limit(self, topic: str) -> int:
        """The topic's ``max.message.bytes`` (the broker's default unless overridden)."""
        found = self._limits.get(topic)
        if found is None:
            res = ConfigResource(ResourceType.TOPIC, topic)
            done = self._wait(
                self._admin.describe_configs([res], request_timeout=self.timeout),
                f"describe topic {topic!r}",
            )
            found = int(next(iter(done.values()))["max.message.bytes"].value)
            self._limits[topic] = found
        return found

    def ends(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """The last stable offset of each partition (what ``read_committed`` can reach)."""
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        request = {TopicPartition(t, p): latest for t, p in partitions}
        if not request:
            return {}
        done = self._wait(
            self._admin.list_offsets(
                request,
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=self.timeout,
            ),
            "list end offsets",
        )
        return {(tp.topic, tp.partition): info.offset for tp, info in done.items()}

    def earliest(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """The first offset still held by each partition."""
        earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        request = {TopicPartition(t, p): earliest for t, p in partitions}
        if not request:
            return {}
        done = self._wait(
            self._admin.list_offsets(request, request_timeout=self.timeout),
            "list start offsets",
        )
        return {(tp.topic, tp.partition): info.offset for tp, info in done.items()}

    def await_stable(self, last: dict[TP, int]) -> bool:
        """Wait until the last stable offset passes ``last`` (transaction markers written).

        False when the broker stopped answering before it did: the markers may be lost
        (see ``_kafka_tx``). True otherwise, also when the wait timed out, since another
        producer's open transaction holds the same offsets back. Never raises: the
        transaction already ended.
        """
        deadline = time.monotonic() + self.timeout
        while last:
            try:
                ends = self.ends(last)
            except EventmlError as exc:
                LOGGER.warning("transaction markers not confirmed: %s", exc)
                return False
            last = {tp: off for tp, off in last.items() if ends[tp] <= off}
            if not last:
                break
            if time.monotonic() > deadline:
                LOGGER.warning("transaction markers not visible after %gs: %s", self.timeout, last)
                break
            time.sleep(0.005)
        return True

    def unstable_offsets(self, group: str, partitions: Iterable[TP]) -> set[TP]:
        """The partitions whose offset commit in ``group`` is held by an open transaction."""
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in partitions])
        done = self._wait(
            self._admin.list_consumer_group_offsets(
                [request], require_stable=True, request_timeout=self.timeout
            ),
            f"list the offsets of consumer group {group!r}",
        )
        parts = next(iter(done.values())).topic_partitions or []
        return {
            (tp.topic, tp.partition)
            for tp in parts
            if tp.error is not None and tp.error.code() == KafkaError.UNSTABLE_OFFSET_COMMIT
        }

    def producer(self, transactional: bool = False) -> Producer:
        """The idempotent producer, or the transactional one (initialised once).

        The transactional producer is replaced (same ``transactional.id``, so the same
        producer id; its init fences the old one and aborts what it left open) once it
        has lost its connection to the cluster: after a broker restart, librdkafka
        2.16's ``send_offsets_to_transaction`` can wait for good on the group
        coordinator it knew before (its timeout is not enforced; librdkafka issues
        5456 and 5511), and the engine would hang there without a word.
        """
        with self._lock:
            if self._closed:
                raise LogError("expected an open log, got a closed one", where=self.servers)
            if not transactional:
                if self._producer is None:
                    self._producer = Producer(self._producer_config())
                return self._producer
            if self._tx_producer is not None:
                self._tx_producer.poll(0)  # serves the error callback: sets _tx_cut
                if self._tx_cut:
                    LOGGER.info("replacing transactional producer %r after a cut", self._tx_id)
                    self._tx_producer = None
            if self._tx_producer is None:
                config = self._producer_config()
                config["transactional.id"] = self._tx_id
                config["transaction.timeout.ms"] = self.transaction_timeout_ms
                config["error_cb"] = self._on_tx_error
                self._tx_cut = False
                producer = Producer(config)
                self._call(
                    lambda: producer.init_transactions(self.timeout),
                    f"initialise transactional producer {self._tx_id!r}",
                )
                self._tx_producer = producer
            return self._tx_producer

    def _on_tx_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._tx_cut = True
        _log_error(err)

    def drop_transactional(self) -> None:
        """Forget a transactional producer that hit a fatal error (the next one re-inits)."""
        with self._lock:
            self._tx_producer = None

    def _producer_config(self) -> dict[str, Any]:
        return client_config(
            self.servers,
            self.timeout,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "message.max.bytes": self.max_message_bytes,
                "message.timeout.ms": int(self.timeout * 1000),
                "error_cb": _log_error,
            },
        )

    def produce(
        self,
        producer: Producer,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partition: int | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Appended:
        """Produce one batch with explicit partitions; wait for every delivery report."""
        where = f"append to topic {topic!r}"
        if keys is not None and len(keys) != len(values):
            raise InputError(
                f"expected one key per value ({len(values)}), got {len(keys)} keys", where=where
            )
        n = self._partitions(topic, create=True)
        chosen = self._partitioner.assign(topic, len(values), keys, partition, n)
        per_value = [chosen] * len(values) if isinstance(chosen, int) else chosen
        self._check_sizes(topic, values, keys)
        offsets = [-1] * len(values)
        failures: list[KafkaError] = []

        def report(i: int) -> Callable[[KafkaError | None, Message], None]:
            def delivered(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    failures.append(err)
                else:
                    offsets[i] = msg.offset() or 0

            return delivered

        try:
            for i, value in enumerate(values):
                key = None if keys is None else keys[i]
                while True:
                    try:
                        producer.produce(
                            topic,
                            value,
                            key,
                            partition=per_value[i],
                            on_delivery=report(i),
                            headers=headers,
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            left = producer.flush(self.timeout + 5)
        except KafkaException as exc:
            raise mapped(exc, self.servers, where) from exc
        if failures:
            raise mapped(failures[0], self.servers, where)
        if left:
            raise LogUnavailable(
                f"expected the Kafka broker at {self.servers} to acknowledge {left} values, "
                f"got no answer within {self.timeout:g} s",
                where=where,
            )
        return Appended(per_value, offsets)

    def _check_sizes(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None
    ) -> None:
        limit = min(self._limit(topic), self.max_message_bytes) - RECORD_OVERHEAD
        for i, value in enumerate(values):
            key = None if keys is None else keys[i]
            size = len(value) + (0 if key is None else len(key))
            if size > limit:
                raise InputError(
                    f"expected a value (with its key) of at most {limit} bytes, the broker's "
                    f"message limit of {limit + RECORD_OVERHEAD} bytes less record overhead, "
                    f"got {size} bytes; push large model payloads with --location "
                    "(file:// or s3://)",
                    where=f"value {i} of an append to topic {topic!r}",
                )

    # -- the Log contract ----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        n = partitions or self.settings.partitions
        if n < 1:
            raise InputError(f"expected at least 1 partition, got {n}", where=f"topic {name!r}")
        config = {"message.timestamp.type": "LogAppendTime"}
        if name == "models":
            config["retention.ms"] = "-1"
        topic = NewTopic(
            name, num_partitions=n, replication_factor=self.settings.replication, config=config
        )
        try:
            self._wait(
                self._admin.create_topics([topic], request_timeout=self.timeout),
                f"create topic {name!r}",
            )
        except LogError as exc:
            cause = exc.__cause__
            code = cause.args[0].code() if isinstance(cause, KafkaException) else None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        # The controller has it; wait until the broker's metadata shows it too.
        deadline = time.monotonic() + self.timeout
        while (found := self._metadata_partitions(name)) is None:
            if time.monotonic() > deadline:
                raise LogUnavailable(
                    f"expected topic {name!r} in the metadata after creating it, "
                    f"got nothing within {self.timeout:g} s",
                    where=f"kafka://{self.servers}",
                )
            time.sleep(0.01)
        self._parts[name] = found

    def topics(self) -> dict[str, int]:
        meta = self._call(lambda: self._admin.list_topics(timeout=self.timeout), "list topics")
        return {
            name: len(t.partitions)
            for name, t in sorted(meta.topics.items())
            if not name.startswith("__") and t.error is None
        }

    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        if not values:
            return Appended((), ())
        with self._lock:
            return self.produce(self.producer(), topic, values, keys, partition)

    def read(
        self,
        topic: str,
        partition: int,
        start: int = 0,
        stop: int | None = None,
        limit: int | None = None,
    ) -> Batch:
        self._require(topic, partition)
        start = max(start, 0)
        end = self.ends([(topic, partition)])[(topic, partition)]
        hi = end if stop is None else min(stop, end)
        if start >= hi or limit == 0:
            return Batch(topic, partition, [], [], [], [])
        with self._read_lock:
            return self._fetch(topic, partition, start, hi, limit)

    def _fetch(self, topic: str, partition: int, start: int, hi: int, limit: int | None) -> Batch:
        if self._reader is None:
            self._reader = RawConsumer(
                client_config(
                    self.servers,
                    self.timeout,
                    **{
                        "group.id": f"eventml-reader-{uuid.uuid4().hex}",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "isolation.level": "read_committed",
                        "enable.partition.eof": True,
                        "fetch.wait.max.ms": 10,
                        "error_cb": _log_error,
                    },
                )
            )
        reader = self._reader
        offsets: list[int] = []
        stamps: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes] = []
        want = (hi - start) if limit is None else min(limit, hi - start)
        deadline = time.monotonic() + self.timeout
        doing = f"read {topic}[{partition}] from offset {start}"
        self._call(lambda: reader.assign([TopicPartition(topic, partition, start)]), doing)
        try:
            done = False
            while not done:
                got = reader.consume(min(want - len(offsets), 10_000), 0)
                if not got:
                    if time.monotonic() > deadline:
                        raise LogUnavailable(
                            f"expected the Kafka broker at {self.servers} to {doing}, "
                            f"got nothing within {self.timeout:g} s",
                            where=f"kafka://{self.servers}",
                        )
                    first = reader.poll(0.05)
                    got = [] if first is None else [first]
                for msg in got:
                    err = msg.error()
                    off = msg.offset() or 0
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise mapped(err, self.servers, doing)
                        done = off >= hi
                    elif off >= hi:
                        done = True
                    elif is_settle(msg):  # not an entry: see _kafka_tx.settle
                        done = off >= hi - 1
                    else:
                        offsets.append(off)
                        stamps.append(msg.timestamp()[1])
                        keys.append(msg.key())
                        values.append(msg.value() or b"")
                        done = len(offsets) >= want or off >= hi - 1
                    if done:
                        break
        finally:
            self._call(reader.unassign, doing)
        return Batch(topic, partition, offsets, stamps, keys, values)

    def end_offsets(self, topic: str) -> list[int]:
        n = self._partitions(topic)
        ends = self.ends((topic, p) for p in range(n))
        return [ends[(topic, p)] for p in range(n)]

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        self._require(topic, partition)
        done = self._wait(
            self._admin.list_offsets(
                {TopicPartition(topic, partition): OffsetSpec.for_timestamp(timestamp_ms)},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=self.timeout,
            ),
            f"look up a time in {topic}[{partition}]",
        )
        offset = int(next(iter(done.values())).offset)
        return offset if offset >= 0 else self.ends([(topic, partition)])[(topic, partition)]

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        from eventml.log._kafka_consumer import KafkaConsumer

        member = KafkaConsumer(self, group, topics)
        self._consumers.add(member)
        return member

    def _group_offsets(self, group: str) -> dict[TP, int]:
        """The group's committed offsets, waiting briefly for transactions being completed.

        With ``require_stable`` the coordinator answers ``UNSTABLE_OFFSET_COMMIT`` for a
        partition whose offset commit is part of an open transaction (its markers not yet
        written, or a member crashed inside it). Such a partition must not be left out
        (it would read as never committed): ask again for up to ``STABLE_WAIT`` seconds,
        then take the last committed offset, which the open transaction has not changed.
        """
        deadline = time.monotonic() + min(self.timeout, STABLE_WAIT)
        stable = True
        while True:
            done = self._wait(
                self._admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group)],
                    require_stable=stable,
                    request_timeout=self.timeout,
                ),
                f"list the offsets of consumer group {group!r}",
            )
            parts = next(iter(done.values())).topic_partitions or []
            unstable = [
                tp
                for tp in parts
                if tp.error is not None and tp.error.code() == KafkaError.UNSTABLE_OFFSET_COMMIT
            ]
            if not unstable or not stable:
                break
            if time.monotonic() > deadline:
                stable = False
            else:
                time.sleep(0.01)
        for tp in parts:
            if tp.error is not None and tp.error.code() != KafkaError.UNSTABLE_OFFSET_COMMIT:
                raise mapped(tp.error, self.servers, f"list the offsets of group {group!r}")
        return {(tp.topic, tp.partition): tp.offset for tp in parts if tp.offset >= 0}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        offsets = self._group_offsets(group)
        return {p: off for (t, p), off in sorted(offsets.items()) if t == topic}

    def groups(self) -> list[GroupLag]:
        listed = self._wait(
            {"groups": self._admin.list_consumer_groups(request_timeout=self.timeout)},
            "list consumer groups",
        )["groups"]
        names = sorted(g.group_id for g in listed.valid)
        offsets = {g: self._group_offsets(g) for g in names}
        existing = self.topics()
        wanted = {tp for offs in offsets.values() for tp in offs if tp[1] < existing.get(tp[0], 0)}
        ends = self.ends(wanted)
        return [
            GroupLag(g, t, p, off, ends.get((t, p), off))
            for g in names
            for (t, p), off in sorted(offsets[g].items())
        ]

    def transaction(self) -> TransactionContext:
        from eventml.log._kafka_tx import KafkaTransaction

        return KafkaTransaction(self)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for member in list(self._consumers):
                member.close()
            for producer in (self._producer, self._tx_producer):
                if producer is None:
                    continue
                try:  # a producer in a fatal state (a broker lost mid-transaction) raises here
                    left = producer.flush(self.timeout)
                    if left:
                        LOGGER.warning("%d values not delivered at close", left)
                    producer.close()
                except KafkaException as exc:
                    LOGGER.warning("producer did not close cleanly: %s", exc)
            if self._reader is not None:
                self._reader.close()
            self._producer = self._tx_producer = self._reader = None


def _log_error(err: KafkaError) -> None:
    LOGGER.info("kafka client: %s", err)
