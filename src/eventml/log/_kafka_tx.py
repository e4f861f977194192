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
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException, Producer, TopicPartition

from eventml.errors import EventmlError, InputError
from eventml.log._kafka_common import LOGGER, kafka_error, mapped
from eventml.log._kafka_consumer import KafkaConsumer
from eventml.log.base import Appended, Consumer, Transaction, TransactionContext
from eventml.log.base import TopicPartition as TP

if TYPE_CHECKING:
    from eventml.log._kafka import KafkaLog


class KafkaTransaction(TransactionContext, Transaction):
    """A Kafka transaction: begun on enter, committed or aborted on exit."""

    def __init__(self, log: KafkaLog) -> None:
        self._log = log
        self._last: dict[TP, int] = {}
        self._producer: Producer | None = None

    def __enter__(self) -> Transaction:
        self._log._tx_lock.acquire()
        try:
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
        out = self._log.produce(self._active(), topic, values, keys, partition)
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

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        producer = self._active()
        try:
            if et is None:
                try:
                    producer.commit_transaction(self._log.timeout)
                except KafkaException as exc:
                    self._abort(producer)
                    raise mapped(exc, self._log.servers, "commit a transaction") from exc
                self._log.await_stable(self._last)
            else:
                self._abort(producer)
        finally:
            self._producer = None
            self._log._tx_lock.release()

    def _abort(self, producer: Producer) -> None:
        deadline = time.monotonic() + 3 * self._log.timeout
        while True:
            try:
                producer.abort_transaction(self._log.timeout)
                break
            except KafkaException as exc:
                err = kafka_error(exc)
                if (
                    err is not None
                    and err.retriable()
                    and not err.fatal()
                    and time.monotonic() < deadline
                ):
                    continue  # librdkafka: a timed-out abort resumes when called again
                # A producer stuck mid-abort cannot begin again: the next transaction starts a
                # new one, whose init fences this one.
                LOGGER.warning("abort failed (%s); the next transaction starts a new producer", exc)
                self._log.drop_transactional()
                return
        try:  # so that end offsets move past the aborted records before we return
            self._log.await_stable(self._last)
        except EventmlError as exc:
            LOGGER.warning("after an abort: %s", exc)
