"""Kafka transactions behind ``with log.transaction() as tx: ...``.

One transactional producer per :class:`~eventml.log._kafka.KafkaLog` (``transactional.id``
unique per process and log, ``init_transactions`` once); transactions of one log run one
at a time. ``tx.append`` produces inside the transaction and waits for the delivery
reports (so it can return offsets); ``tx.commit_offsets`` is
``send_offsets_to_transaction`` with the consumer's group metadata, so the group
coordinator refuses a member that lost its group (:class:`~eventml.errors.GroupBusy`).
Leaving the block commits; an exception aborts, and ``read_committed`` readers never see
the aborted records (they still take offsets). The block returns only once the
transaction's markers are written, so a read right after it sees the result.

Settling. A broker that stops (a controlled shutdown) while it completes a transaction
can skip the markers of partitions that have no leader at that moment: it takes them for
deleted. On a single-node cluster every partition is leaderless during the shutdown, so
a transaction that ends then stays open on its partitions after the restart, although
its coordinator finished it: the last stable offset of its data partitions stays behind
it, and its offset commit stays pending (``UNSTABLE_OFFSET_COMMIT``), for ever, since the
broker only times out transactions that its coordinator still thinks open. The consumer
that owns those offsets waits for them, and the engine waits on itself.

Only a marker from the same producer id ends such a transaction, and this log's producer
keeps it (a new producer with the same ``transactional.id`` gets the same id). So when the
broker stops answering before a transaction's markers show up (:meth:`KafkaLog.await_stable`),
the log remembers it (:class:`Unsettled`), and :func:`settle` runs one more transaction with the same outcome
on the partitions still held: an empty record with the :data:`SETTLE_HEADER` header on each
data partition (eventml's readers skip it) and the same consumer offsets again, committed
if the lost transaction committed, aborted if it aborted. Its markers end both. The next
transaction settles first, and so does a member of the group that finds its offsets held.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException, Producer, TopicPartition

from eventml.errors import InputError, LogUnavailable
from eventml.log._kafka_common import LOGGER, SETTLE_HEADER, kafka_error, mapped
from eventml.log._kafka_consumer import KafkaConsumer
from eventml.log.base import Appended, Consumer, Transaction, TransactionContext
from eventml.log.base import TopicPartition as TP

if TYPE_CHECKING:
    from eventml.log._kafka import KafkaLog


@dataclass(frozen=True)
class Unsettled:
    """A transaction of this log whose markers were not seen: what :func:`settle` repeats."""

    commit: bool
    """The outcome it had (False when it aborted, or when its producer was lost)."""
    parts: dict[TP, int]
    """Data partitions it wrote → the last offset it wrote there."""
    offsets: dict[TP, int]
    """The consumer offsets it sent, for :attr:`group`."""
    group: str
    member: weakref.ref[KafkaConsumer] | None
    """The consumer whose offsets it sent (its current group metadata is needed)."""


class _Rollback(Exception):
    """Raised inside a settling transaction to abort it."""


class KafkaTransaction(TransactionContext, Transaction):
    """A Kafka transaction: begun on enter, committed or aborted on exit."""

    def __init__(self, log: KafkaLog, settling: bool = False) -> None:
        self._log = log
        self._settling = settling
        self._last: dict[TP, int] = {}
        self._offsets: dict[TP, int] = {}
        self._member: KafkaConsumer | None = None
        self._producer: Producer | None = None

    def __enter__(self) -> Transaction:
        self._log._tx_lock.acquire()
        try:
            if not self._settling and self._log.unsettled is not None:
                settle(self._log)
            producer = self._log.producer(transactional=True)
            try:
                producer.begin_transaction()
            except KafkaException as exc:
                raise mapped(exc, self._log.servers, "begin a transaction") from exc
        except BaseException:
            self._log._tx_lock.release()
            raise
        self._producer = producer
        return self

    def _active(self) -> Producer:
        if self._producer is None:
            raise InputError("expected a transaction inside its with-block, got it outside")
        return self._producer

    def append(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
    ) -> Appended:
        if not values:
            return Appended((), ())
        return self._note(topic, self._log.produce(self._active(), topic, values, keys, partition))

    def _append_settle(self, topic: str, partition: int) -> None:
        out = self._log.produce(
            self._active(), topic, [b""], None, partition, headers=[(SETTLE_HEADER, b"")]
        )
        self._note(topic, out)

    def _note(self, topic: str, out: Appended) -> Appended:
        for p, off in zip(out.partitions, out.offsets, strict=True):
            self._last[(topic, p)] = max(off, self._last.get((topic, p), -1))
        return out

    def commit_offsets(self, consumer: Consumer, offsets: Mapping[TP, int]) -> None:
        if not isinstance(consumer, KafkaConsumer):
            raise InputError(f"expected a consumer of this log, got {type(consumer).__name__}")
        metadata = consumer.group_metadata()
        if not offsets:
            return
        try:
            self._active().send_offsets_to_transaction(
                [TopicPartition(t, p, off) for (t, p), off in offsets.items()],
                metadata,
                self._log.timeout,
            )
        except KafkaException as exc:
            raise mapped(
                exc, self._log.servers, f"commit offsets of consumer group {consumer.group!r}"
            ) from exc
        self._offsets.update(offsets)
        self._member = consumer

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        producer = self._active()
        try:
            if et is None:
                try:
                    self._commit(producer)
                except KafkaException as exc:
                    self._abort(producer)
                    raise mapped(exc, self._log.servers, "commit a transaction") from exc
                # Committed: whatever happens next, the caller must not take it for a failure
                # (it would score the batch again).
                self._settled(commit=True)
            else:
                self._abort(producer)
        finally:
            self._producer = None
            self._log._tx_lock.release()

    def _commit(self, producer: Producer) -> None:
        """Commit; a timed-out commit is resumed, not aborted (it may have gone through)."""
        failed = self._resumed(producer.commit_transaction, commit=True)
        if failed is not None:
            raise failed

    def _abort(self, producer: Producer) -> None:
        failed = self._resumed(producer.abort_transaction, commit=False)
        if failed is not None:
            # A producer stuck mid-abort cannot begin again: the next transaction starts a
            # new one, whose init fences this one and aborts what the coordinator still
            # has open; settling covers what it does not.
            LOGGER.warning("abort failed (%s); the next transaction starts a new producer", failed)
            self._log.drop_transactional()
            if self._last or self._offsets:
                self._remember(commit=False)
            return
        self._settled(commit=False)

    def _resumed(self, end: Callable[[float], None], commit: bool) -> KafkaException | None:
        """Call ``end`` (commit or abort) again while it fails retriably, for up to three
        timeouts (librdkafka resumes a timed-out end when called again); the failure that
        stopped it, or None. A commit the coordinator wants aborted is not retried."""
        deadline = time.monotonic() + 3 * self._log.timeout
        while True:
            try:
                end(self._log.timeout)
                return None
            except KafkaException as exc:
                err = kafka_error(exc)
                if (
                    err is None
                    or not err.retriable()
                    or err.fatal()
                    or (commit and err.txn_requires_abort())
                    or time.monotonic() > deadline
                ):
                    return exc

    def _settled(self, commit: bool) -> None:
        """Wait for the markers (end offsets move past the records); remember a miss.

        A miss is a broker that stopped answering right then (markers it may have
        dropped), not a wait that timed out: another producer's open transaction (a
        member killed inside one) holds end offsets back just the same, and that one the
        broker times out itself. The offset commit's marker is not checked (that costs a
        request to the group coordinator per transaction): the data partitions' markers
        stand for it, since the coordinator writes them together.
        """
        if not self._log.await_stable(self._last):
            self._remember(commit)
        elif not self._settling:
            self._log.unsettled = None

    def _remember(self, commit: bool) -> None:
        """This transaction's partitions and offsets, for settling its lost markers."""
        member = self._member
        self._log.unsettled = Unsettled(
            commit=commit,
            parts=dict(self._last),
            offsets=dict(self._offsets),
            group=member.group if member is not None else "",
            member=weakref.ref(member) if member is not None else None,
        )


def settle(log: KafkaLog, member: KafkaConsumer | None = None) -> None:
    """End :attr:`KafkaLog.unsettled` with its own outcome (see the module docstring).

    ``member`` is a live consumer of the transaction's group, when the caller is one.
    Raises what the broker answers (:class:`~eventml.errors.LogUnavailable`, ...) and
    then stays unsettled, to be tried again.
    """
    with log._tx_lock:
        lost = log.unsettled
        if lost is None:
            return
        log.producer(transactional=True)  # a new producer's init ends what it can first
        ends = log.ends(lost.parts)
        parts = {tp: off for tp, off in lost.parts.items() if ends[tp] <= off}
        offsets: dict[TP, int] = {}
        if lost.offsets:
            held = log.unstable_offsets(lost.group, lost.offsets)
            offsets = {tp: off for tp, off in lost.offsets.items() if tp in held}
        if not parts and not offsets:
            log.unsettled = None
            return
        if member is None or member.group != lost.group:
            member = lost.member() if lost.member is not None else None
        if offsets and member is None:
            LOGGER.warning(
                "cannot settle the offsets of consumer group %r: its member closed", lost.group
            )
            offsets = {}
        LOGGER.warning(
            "settling a transaction whose markers were lost (%s): %s%s",
            "committed" if lost.commit else "aborted",
            ", ".join(f"{t}[{p}]" for t, p in sorted(parts)) or "no data partitions",
            f"; offsets of consumer group {lost.group!r}" if offsets else "",
        )
        tx = KafkaTransaction(log, settling=True)
        try:
            with tx:
                for topic, p in sorted(parts):
                    tx._append_settle(topic, p)
                if offsets and member is not None:
                    tx.commit_offsets(member, offsets)
                if not lost.commit:
                    raise _Rollback
        except _Rollback:
            pass
        except BaseException:
            log.unsettled = lost  # its own outcome, whatever the settling one had
            raise
        # The settling transaction's markers: its data partitions (checked on exit, which
        # leaves ``unsettled`` alone when they are written) and its offset commit.
        if log.unsettled is not lost or (offsets and not _released(log, lost.group, offsets)):
            log.unsettled = lost
            raise LogUnavailable(
                f"expected the broker at {log.servers} to write the markers of a settling "
                "transaction, got none within the timeout",
                where=f"kafka://{log.servers}",
            )
        log.unsettled = None
        LOGGER.warning("settled: its partitions and offsets are readable again")


def _released(log: KafkaLog, group: str, offsets: Mapping[TP, int]) -> bool:
    """Wait (up to the log's timeout) until no offset commit of ``offsets`` is pending."""
    deadline = time.monotonic() + log.timeout
    while log.unstable_offsets(group, offsets):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
