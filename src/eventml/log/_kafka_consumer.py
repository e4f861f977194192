"""A Kafka consumer-group member behind eventml's :class:`~eventml.log.base.Consumer`.

Kafka semantics, not the embedded log's: several live members of one group share its
partitions (cooperative-sticky rebalancing, so a partition that stays with a member keeps
its uncommitted position); nothing is committed automatically (``enable.auto.commit`` off,
``read_committed``). A new member starts each partition at the group's committed offset,
or at the partition's first offset for a group that never committed.

``poll(timeout=0)`` still returns entries that were appended before the call: a Kafka
consumer fetches in the background, so ``poll`` compares its positions with the last
stable offsets and waits (up to the log's timeout) for what already exists; ``timeout``
bounds only the wait for entries that do not exist yet. Positions advance past
transaction markers and aborted records when the fetcher reaches them, so a position
can exceed the last entry's offset + 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from eventml.errors import EventmlError, GroupBusy, InputError, LogUnavailable, NotFound
from eventml.log._kafka_common import LOGGER, client_config, is_settle, kafka_error, mapped
from eventml.log.base import Batch, Consumer
from eventml.log.base import TopicPartition as TP

if TYPE_CHECKING:
    from eventml.log._kafka import KafkaLog

_IGNORED = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._TRANSPORT}
_UNSTABLE = {KafkaError._TIMED_OUT, KafkaError.UNSTABLE_OFFSET_COMMIT}

UNSTABLE_WAIT = 75.0
"""Seconds a new owner of a partition waits for a crashed member's open transaction to be
aborted by the broker (librdkafka's default ``transaction.timeout.ms`` is 60 s)."""


class KafkaConsumer(Consumer):
    """One member of a Kafka consumer group."""

    def __init__(self, log: KafkaLog, group: str, topics: Sequence[str]) -> None:
        if not group:
            raise InputError("expected a non-empty consumer group name, got ''")
        self._log = log
        self.group = group
        self.topics = tuple(topics)
        self._closed = False
        self._pos: dict[TP, int] = {}
        self._buffer: list[Message] = []
        self._rebalances = 0
        self._pending: set[TP] = set()  # assigned, start offsets not known yet (paused)
        self._committing: dict[TP, int] = {}  # what commit() is still trying to commit
        self._missing = set(self.topics)
        self._c = RawConsumer(
            client_config(
                log.servers,
                log.timeout,
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "partition.assignment.strategy": "cooperative-sticky",
                    "fetch.wait.max.ms": 100,
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                    "error_cb": self._on_error,
                },
            )
        )
        self._c.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._find_topics()
        if len(self._missing) < len(self.topics):
            self._await_rebalance(0)

    # -- group membership ----------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        LOGGER.info("consumer %r: %s", self.group, err)

    def _on_assign(self, consumer: RawConsumer, parts: list[TopicPartition]) -> None:
        self._rebalances += 1
        if not parts:
            return
        try:
            starts = self._starts(consumer, parts, in_callback=True)
        except EventmlError as exc:
            # Raising from here would not undo the assignment: confluent-kafka assigns the
            # partitions itself when the callback fails, librdkafka fetches them, and this
            # object, which never learnt their positions, drops every entry: the member
            # would sit idle for good. Take them paused instead, and start them on the
            # next poll (which raises this again while it lasts).
            LOGGER.info("consumer %r: partitions assigned, not started: %s", self.group, exc)
            consumer.incremental_assign([TopicPartition(tp.topic, tp.partition) for tp in parts])
            consumer.pause(parts)
            self._pending.update((tp.topic, tp.partition) for tp in parts)
            return
        consumer.incremental_assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
        self._pos.update(starts)

    def _starts(
        self, consumer: RawConsumer, parts: list[TopicPartition], in_callback: bool = False
    ) -> dict[TP, int]:
        """Where to start each partition: the group's committed offset, else the first one."""
        committed = self._committed(consumer, parts, in_callback)
        fresh = [(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        first = self._log.earliest(fresh)
        starts: dict[TP, int] = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            starts[key] = tp.offset if tp.offset >= 0 else first[key]
        return starts

    def _start_pending(self) -> None:
        """Start the partitions that :meth:`_on_assign` could not (raises while it cannot)."""
        parts = [TopicPartition(t, p) for t, p in sorted(self._pending)]
        starts = self._starts(self._c, parts)
        try:
            # Assigned again at the known offsets: nothing librdkafka did meanwhile counts.
            self._c.incremental_unassign(parts)
            self._c.incremental_assign(
                [TopicPartition(t, p, off) for (t, p), off in starts.items()]
            )
            self._c.resume(parts)
        except KafkaException as exc:
            raise mapped(exc, self._log.servers, f"assign partitions of {self.group!r}") from exc
        self._pending.clear()
        self._pos.update(starts)

    def _committed(
        self, consumer: RawConsumer, parts: list[TopicPartition], in_callback: bool = False
    ) -> list[TopicPartition]:
        """The group's committed offsets of newly assigned partitions, once they are stable.

        A member that crashed inside a transaction leaves its offset commit pending until
        the broker aborts that transaction (``transaction.timeout.ms``: 10 s for eventml's
        producers, 60 s for librdkafka's default). Meanwhile the coordinator answers
        ``UNSTABLE_OFFSET_COMMIT``, which librdkafka retries until the call times out.
        Starting anywhere else would score records twice or skip them, so wait (bounded
        by :data:`UNSTABLE_WAIT`) while the broker itself answers. When the transaction is
        this log's own, whose markers a broker shutdown lost, nobody else can end it:
        settle it (``_kafka_tx.settle``) and ask again. Not from a rebalance callback
        (``in_callback``): a transactional call made there never returns
        (``send_offsets_to_transaction`` waits for good, confluent-kafka 2.16), so the
        partitions wait for the next poll.
        """
        deadline = time.monotonic() + UNSTABLE_WAIT
        doing = f"fetch the committed offsets of consumer group {self.group!r}"
        warned = False
        while True:
            try:
                return consumer.committed(parts, timeout=self._log.timeout)
            except Exception as exc:  # committed() raises a bare KafkaError from callbacks
                err = kafka_error(exc)
                if err is None:
                    raise
                if err.code() not in _UNSTABLE or time.monotonic() > deadline:
                    raise mapped(err, self._log.servers, doing) from exc
            lost = self._log.unsettled
            if lost is not None and lost.group == self.group and in_callback:
                raise LogUnavailable(
                    f"expected the committed offsets of consumer group {self.group!r}, got "
                    "them held by this log's own transaction; settling it on the next poll",
                    where=f"kafka://{self._log.servers}",
                )
            if lost is not None and lost.group == self.group:
                from eventml.log._kafka_tx import settle  # it imports this module

                try:
                    settle(self._log, self)
                    continue
                except EventmlError as exc:
                    LOGGER.info("consumer %r: settling failed: %s", self.group, exc)
            # A broker that is down raises LogUnavailable here; one that answers is waiting
            # for a transaction to end.
            self._log.ends((tp.topic, tp.partition) for tp in parts)
            if not warned:
                LOGGER.warning(
                    "consumer group %r: the committed offsets of %s are held by an open "
                    "transaction (a member that crashed?); waiting up to %g s for the broker "
                    "to abort it",
                    self.group,
                    ", ".join(f"{tp.topic}[{tp.partition}]" for tp in parts),
                    UNSTABLE_WAIT,
                )
                warned = True

    def _on_revoke(self, consumer: RawConsumer, parts: list[TopicPartition]) -> None:
        self._rebalances += 1
        gone = {(tp.topic, tp.partition) for tp in parts}
        handing = {key: off for key, off in self._committing.items() if key in gone}
        if handing:
            # commit() was refused because this rebalance was under way. The revoke callback
            # is the last moment this member may still commit the partitions it hands over
            # (the next owner reads the committed offset only after it returns); a failure
            # leaves them in _committing, and commit() raises GroupBusy.
            try:
                self._commit_now(consumer, handing)
            except Exception as exc:  # a callback's commit() may raise a bare KafkaError
                if kafka_error(exc) is None:
                    raise
                LOGGER.info("consumer %r: commit while handing over failed: %s", self.group, exc)
            else:
                for key in handing:
                    del self._committing[key]
        self._pending -= gone
        for key in gone:
            self._pos.pop(key, None)
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in gone]

    def _await_rebalance(self, seen: int) -> None:
        """Serve the consumer until a rebalance after ``seen`` completed (bounded)."""
        deadline = time.monotonic() + self._log.timeout
        while self._rebalances <= seen and time.monotonic() < deadline:
            self._fill(0.05)

    def _find_topics(self) -> bool:
        """Look for subscribed topics created since the last look; True if any appeared."""
        appeared = False
        for topic in sorted(self._missing):
            try:
                meta = self._c.list_topics(topic, timeout=self._log.timeout)
            except KafkaException as exc:
                raise mapped(exc, self._log.servers, f"describe topic {topic!r}") from exc
            found = meta.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                self._missing.discard(topic)
                appeared = True
        return appeared

    # -- fetching ------------------------------------------------------------------------

    def _fill(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a message, then take whatever else is ready."""
        try:
            first = self._c.poll(timeout)
            if first is not None:
                more = self._c.consume(10_000, 0)
                self._buffer.append(first)
                self._buffer.extend(more)
        except KafkaException as exc:
            raise mapped(exc, self._log.servers, f"poll consumer group {self.group!r}") from exc

    def _take(self, count: int) -> list[Message]:
        """Up to ``count`` entries from what is fetched; moves positions (also past EOFs)."""
        if not self._buffer:
            fetched = self._c.consume(min(count, 10_000), 0)
            self._buffer.extend(fetched)
        out: list[Message] = []
        used = 0
        for msg in self._buffer:
            if len(out) >= count:
                break
            used += 1
            key = (msg.topic() or "", msg.partition() or 0)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if key in self._pos:
                        self._pos[key] = max(self._pos[key], msg.offset() or 0)
                elif err.code() in _IGNORED:
                    LOGGER.debug("consumer %r: %s", self.group, err)
                else:
                    del self._buffer[:used]
                    raise mapped(err, self._log.servers, f"poll consumer group {self.group!r}")
                continue
            offset = msg.offset() or 0
            if key in self._pos and offset >= self._pos[key]:
                if not is_settle(msg):  # not an entry (see _kafka_tx.settle)
                    out.append(msg)
                self._pos[key] = offset + 1
        del self._buffer[:used]
        return out

    def _behind(self, ends: Mapping[TP, int]) -> bool:
        return any(pos < ends.get(key, 0) for key, pos in self._pos.items())

    def poll(self, max_records: int = 1000, timeout: float = 0.0) -> list[Batch]:
        if self._closed:
            raise InputError("expected an open consumer, got a closed one", where=self.group)
        now = time.monotonic()
        deadline = now + timeout
        if self._missing:
            seen = self._rebalances
            if self._find_topics():
                self._await_rebalance(seen)
        if self._rebalances == 0 and len(self._missing) < len(self.topics):
            self._await_rebalance(0)  # the first join did not finish in the constructor
        if self._pending:
            self._start_pending()
        catch_up = now + self._log.timeout
        ends: dict[TP, int] | None = None
        out: list[Message] = []
        try:
            while len(out) < max_records:
                got = self._take(max_records - len(out))
                if got:
                    out.extend(got)
                    continue
                if ends is None:
                    ends = self._log.ends(self._pos)
                now = time.monotonic()
                if self._behind(ends):
                    # Entries that existed when poll began: fetch them whatever the timeout.
                    if now > catch_up:
                        break
                    self._fill(0.01)
                elif out or now >= deadline:
                    break
                else:
                    self._fill(min(deadline - now, 0.1))
        except BaseException:
            self._give_back(out)
            raise
        return _batches(out)

    def _give_back(self, taken: list[Message]) -> None:
        """A poll that raises returns nothing: put what it took back, positions included.

        Otherwise a caller that goes on after the error (a stream processor riding out a
        broker restart) would never see those entries, and its next commit would skip them.
        """
        firsts: dict[TP, int] = {}
        for msg in taken:
            key = (msg.topic() or "", msg.partition() or 0)
            firsts.setdefault(key, msg.offset() or 0)
        kept = [m for m in taken if (m.topic() or "", m.partition() or 0) in self._pos]
        self._buffer[:0] = kept
        for key, first in firsts.items():
            if key in self._pos:
                self._pos[key] = min(self._pos[key], first)

    # -- positions and commits -----------------------------------------------------------

    def positions(self) -> dict[TP, int]:
        return dict(self._pos)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if key not in self._pos:
            raise NotFound(f"expected an assigned partition, got {topic}[{partition}]")
        try:
            self._c.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            raise mapped(exc, self._log.servers, f"seek {topic}[{partition}]") from exc
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) != key]
        self._pos[key] = offset

    def commit(self, offsets: Mapping[TP, int] | None = None) -> None:
        """Commit; during a rebalance, serve it and commit once it completed.

        Partitions that the rebalance hands to another member are committed as they are
        handed over (in the revoke callback). A member that lost them without handing them
        over (its session expired) gets :class:`~eventml.errors.GroupBusy`, as on the
        embedded log.
        """
        self._committing = dict(self._pos if offsets is None else offsets)
        doing = f"commit offsets of consumer group {self.group!r}"
        deadline = time.monotonic() + self._log.timeout
        try:
            while self._committing:
                try:
                    self._commit_now(self._c, self._committing)
                    return
                except KafkaException as exc:
                    err = mapped(exc, self._log.servers, doing)
                    if not isinstance(err, GroupBusy) or time.monotonic() > deadline:
                        raise err from exc
                    self._fill(0.05)  # serve the rebalance (fetched entries stay buffered)
                    if not self._committing.keys() <= set(self._pos):
                        raise err from exc
        finally:
            self._committing = {}

    @staticmethod
    def _commit_now(consumer: RawConsumer, offsets: Mapping[TP, int]) -> None:
        done = consumer.commit(
            offsets=[TopicPartition(t, p, off) for (t, p), off in offsets.items()],
            asynchronous=False,
        )
        for tp in done or []:
            if tp.error is not None:
                raise KafkaException(tp.error)

    def group_metadata(self) -> Any:
        """The member's identity for a transaction's offset commit (fences zombies)."""
        if self._closed:
            raise GroupBusy(
                f"expected a live member of consumer group {self.group!r}, got one that "
                "closed and left the group; its offsets belong to the current members"
            )
        return self._c.consumer_group_metadata()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer.clear()
            self._pos.clear()
            self._pending.clear()
            try:
                self._c.close()
            except KafkaException as exc:
                LOGGER.warning("consumer %r did not leave cleanly: %s", self.group, exc)


def _batches(messages: Sequence[Message]) -> list[Batch]:
    """Messages grouped per partition (in first-seen order), as columnar batches."""
    grouped: dict[TP, tuple[list[int], list[int], list[bytes | None], list[bytes]]] = {}
    for msg in messages:
        key = (msg.topic() or "", msg.partition() or 0)
        cols = grouped.setdefault(key, ([], [], [], []))
        cols[0].append(msg.offset() or 0)
        cols[1].append(msg.timestamp()[1])
        cols[2].append(msg.key())
        cols[3].append(msg.value() or b"")
    return [Batch(t, p, *cols) for (t, p), cols in grouped.items()]
