"""The group-commit sink: answered requests reach the log in batches, off the latency path.

:class:`GroupCommitSink` is a :data:`~eventml.serving.online.Sink`: calling it queues the
answered record and its prediction and returns at once (:meth:`GroupCommitSink.write` takes
a request's answers already encoded, :class:`~eventml.serving.online.Answered`: what the
rendezvous's short path hands over, no struct per row). A writer thread takes what is
queued, waits at most ``interval_ms`` (2 ms) after the first item or until ``max_items``
are queued, then writes the whole batch in one log transaction (the answers of one request,
:meth:`GroupCommitSink.many`, always go in the same transaction), exactly as
:class:`~eventml.serving.online.LogSink` does for one item: the records (``answered``,
keyed by entity), then the predictions, each with the ``source`` position its record got.

The durability bound: an answer is on the log at most ``interval_ms`` plus one
transaction after it was given (a few milliseconds on the embedded log); a process that
is killed (SIGKILL, power loss) loses at most the answers queued and not yet committed,
never a committed one. A graceful stop (SIGTERM, SIGINT, :meth:`GroupCommitSink.close`)
writes everything queued. With ``sync`` the HTTP layer waits for the commit of each
request's batch (:meth:`GroupCommitSink.expect`) before answering: nothing answered is
ever lost, for the price of the batch wait.

The queue is bounded (``max_pending``): when the log falls behind, callers block, which
the HTTP layer's concurrency limit turns into 429 answers instead of unbounded memory.
The audit index (record id → position of its prediction) keeps the newest ``index_size``
(100,000, about 25 MB); older look-ups fall back to reading ``predictions``.
A batch that fails to commit is retried (three times, with backoff); after that its
waiters are told the error and it is counted in ``failed``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from eventml import events as ev
from eventml.errors import EventmlError, LogUnavailable
from eventml.log import Log
from eventml.serving.online import Answered

RECORDS = "records"
PREDICTIONS = "predictions"
_log = logging.getLogger("eventml.api.writer")


@dataclass(slots=True)
class Waiter:
    """Set when the batch holding one record was committed (``error`` if it never was)."""

    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def wait(self, timeout: float) -> None:
        """Block until committed; raises :class:`LogUnavailable` on failure or timeout."""
        if not self.done.wait(timeout):
            raise LogUnavailable(
                f"expected the answer on the log within {timeout} s, got no commit"
            )
        if self.error is not None:
            raise LogUnavailable(f"expected the answer on the log, got {self.error}")


Committed = Callable[[list[str], list[tuple[int, int]]], None]
"""Told after each commit: the record ids and their predictions' (partition, offset)."""


class GroupCommitSink:
    """Batches answered requests into log transactions on a writer thread."""

    def __init__(
        self,
        log: Log,
        *,
        interval_ms: float = 2.0,
        max_items: int = 512,
        max_pending: int = 20_000,
        index_size: int = 100_000,
        on_commit: Committed | None = None,
    ) -> None:
        self.log = log
        self.interval = interval_ms / 1000
        self.max_items = max_items
        self.max_pending = max_pending
        self.on_commit = on_commit
        self.index: OrderedDict[str, tuple[int, int]] = OrderedDict()
        """record id → (partition, offset) of its prediction, the newest ``index_size``."""
        self.index_size = index_size
        self._queue: deque[Answered] = deque()
        """One entry per request (its answers are written in one transaction)."""
        self._count = 0
        """Answers queued."""
        self._waiters: dict[str, Waiter] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="eventml-writer", daemon=True)
        self._thread.start()

    # -- the sink ------------------------------------------------------------------------

    def __call__(self, record: ev.Record, prediction: ev.Prediction) -> None:
        self.many([record], [prediction])

    def many(self, records: list[ev.Record], predictions: list[ev.Prediction]) -> None:
        """Queue the answers of one request: they are written together, in one transaction."""
        self.write(Answered.of(records, predictions))

    def write(self, answered: Answered) -> None:
        """Queue the answers of one request, as log bytes (one transaction, like :meth:`many`)."""
        n = len(answered)
        with self._cond:
            if self._closing:
                raise LogUnavailable("expected a running writer, got one that is closing")
            while self._count and self._count + n > self.max_pending:
                self._cond.wait(0.1)
            self._queue.append(answered)
            self._count += n
            if len(self._queue) == 1 or self._count >= self.max_items:
                self._cond.notify_all()

    def expect(self, record_id: str) -> Waiter:
        """A waiter set once ``record_id``'s batch is committed (register before answering)."""
        waiter = Waiter()
        with self._cond:
            self._waiters[record_id] = waiter
        return waiter

    def forget(self, record_id: str) -> None:
        with self._cond:
            self._waiters.pop(record_id, None)

    @property
    def pending(self) -> int:
        return self._count

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.notify_all()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue and self._closing:
                    return
                deadline = time.monotonic() + self.interval
                while self._count < self.max_items and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                # whole requests, up to max_items answers (at least one request however large)
                chunks = [self._queue.popleft()]
                size = len(chunks[0])
                while self._queue and size + len(self._queue[0]) <= self.max_items:
                    chunks.append(self._queue.popleft())
                    size += len(chunks[-1])
                self._count -= size
                self._busy += 1
                self._cond.notify_all()  # room for blocked callers
            try:
                self._write(chunks)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._idle.notify_all()

    def _write(self, chunks: list[Answered]) -> None:
        if len(chunks) == 1:
            ids, records, keys = chunks[0].ids, chunks[0].records, chunks[0].keys
        else:
            ids = [i for chunk in chunks for i in chunk.ids]
            records = [r for chunk in chunks for r in chunk.records]
            keys = [k for chunk in chunks for k in chunk.keys]
        error: str | None = None
        positions: list[tuple[int, int]] = []
        for attempt in range(4):
            try:
                with self.log.transaction() as tx:
                    landed = tx.append(RECORDS, records, keys if any(keys) else None)
                    predictions: list[bytes] = []
                    at = 0
                    for chunk in chunks:  # each request's predictions name where its records are
                        end = at + len(chunk)
                        predictions += chunk.predictions(
                            landed.partitions[at:end], landed.offsets[at:end]
                        )
                        at = end
                    positions = tx.append(PREDICTIONS, predictions).positions()
                error = None
                break
            except EventmlError as exc:
                error = str(exc)
            except Exception as exc:  # a backend's own failure: retried, then reported
                error = f"{type(exc).__name__}: {exc}"
            _log.warning("writing %d answers failed (attempt %d): %s", len(ids), attempt + 1, error)
            time.sleep(0.05 * 2**attempt)
        with self._cond:
            if error is None:
                self.index.update(zip(ids, positions, strict=True))
                while len(self.index) > self.index_size:
                    self.index.popitem(last=False)
            if self._waiters:
                for record_id in ids:
                    waiter = self._waiters.pop(record_id, None)
                    if waiter is not None:
                        waiter.error = error
                        waiter.done.set()
        if error is None and self.on_commit is not None:
            try:
                self.on_commit(ids, positions)
            except Exception:  # metrics must never stop the writer
                _log.exception("on_commit failed")
