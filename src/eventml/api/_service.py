"""What the HTTP handlers share: the rendezvous, the writer, the engine thread, the views.

:class:`Service` starts and stops them in order (the app's lifespan): on start, the
group-commit writer, the :class:`~eventml.serving.online.Rendezvous` writing through it
and, when asked, the stream engine on a thread of its own with its own consumer group; on
stop, readiness goes off, the writer writes everything queued, then the engine and the
log connections close.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from eventml import events as ev
from eventml.api.metrics import Metrics
from eventml.api.writer import GroupCommitSink
from eventml.config import TOPICS, Settings, topic_partitions
from eventml.errors import EventmlError, InputError, NotFound
from eventml.ingest import check_endpoint
from eventml.log import Log, open_log
from eventml.models.base import LoadedModel
from eventml.serving.online import Answer, Answered, Rendezvous
from eventml.serving.spec import RouteSpec, spec_of

_log = logging.getLogger("eventml.api")
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count()


def new_id() -> str:
    """A record id unique to this process run: 64 random bits, then a counter (32 hex digits).

    As unique as :func:`eventml.events.new_id` for ids made here, without a system call each.
    """
    return f"{_PREFIX}{next(_COUNTER):016x}"


MiB = 1 << 20
_INLINE_S = 0.002
"""Longest a request's scoring may hold the event loop (estimated from recent calls)."""
_COST_WINDOW = 16
"""How many recent calls a route's cost is the least of (see :meth:`Service.predict`)."""
_GATHER_MAX = 256
"""Most records of several requests answered with one model call on the event loop."""
_PROBE_EVERY = 8
"""While requests come one at a time, one in this many waits a turn for others."""


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """How the API runs (``eventml serve`` flags)."""

    sync: bool = False
    """Answer only once the request's batch is committed to the log."""
    max_body: int = 8 * MiB
    max_upload: int = 64 * MiB
    max_in_flight: int = 256
    """Requests served at once; more are answered 429 at once (bounded memory)."""
    timeout_s: float = 30.0
    """Longest a request may take; then 503."""
    batch_ms: float = 2.0
    batch_items: int = 512
    engine_group: str | None = None
    """Run the stream engine in a background thread with this consumer group."""
    freeze_gc: bool = False
    """Once started, hide what was loaded from the garbage collector (``gc.freeze``)."""
    engine_pause_s: float = 0.05
    """How long the engine rests after a step that was not full (see :meth:`Service._pace`)."""
    log_url: str | None = None
    """Open separate connections for the writer and the engine (not for ``memory://``)."""


class _Id(msgspec.Struct, frozen=True, tag="Prediction", gc=False):
    record_id: str


_read_id = msgspec.msgpack.Decoder(_Id).decode


class Service:
    """The running parts behind the HTTP API."""

    def __init__(self, log: Log, settings: Settings, options: ApiOptions, metrics: Metrics) -> None:
        self.log = log
        self.settings = settings
        self.options = options
        self.metrics = metrics
        self.ready = False
        self.in_flight = 0
        """Requests being served (kept by the app's guard)."""
        self.unloaded: set[str] = set()
        self.started_at = ev.now()
        self.writer: GroupCommitSink | None = None
        self.rdv: Rendezvous | None = None
        self.engine_error: str | None = None
        self._engine: Any = None
        self._engine_thread: threading.Thread | None = None
        self._engine_ready = threading.Event()
        self._engine_stop = threading.Event()
        self._extra: list[Log] = []
        self._inline: dict[tuple[str, int], bool] = {}
        self._leads: dict[tuple[str, int], str] = {}
        self._costs: dict[tuple[str, int], deque[float]] = {}
        """route → seconds per record of its last calls (the least of them is its cost)."""
        self._gathers: dict[tuple[str, int], _Gather] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._alone = False
        """Whether the last gathering held one request (requests come one at a time)."""
        self._unprobed = 0
        self._cpu = anyio.CapacityLimiter(os.cpu_count() or 2)
        """Threads for long batches of fast scoring: as many as cores."""
        self._stats_lock = threading.Lock()
        self._stats: Any = None
        self.errors: dict[str, str] = {}
        """record id → why its models failed, until the handler takes it (bounded)."""

    # -- lifecycle -----------------------------------------------------------------------

    def _connection(self) -> Log:
        url = self.options.log_url
        if url is None or url.startswith("memory:"):
            return self.log
        extra = open_log(url, self.settings)
        self._extra.append(extra)
        return extra

    def start(self) -> None:
        for topic in TOPICS:
            self.log.create_topic(topic, topic_partitions(topic, self.settings))
        self.writer = GroupCommitSink(
            self._connection(), interval_ms=self.options.batch_ms,
            max_items=self.options.batch_items, on_commit=self._committed,
        )  # fmt: skip
        self.rdv = Rendezvous(self.log, sink=_Sink(self))
        if self.options.engine_group:
            engine_log = self._connection()
            self._engine_thread = threading.Thread(
                target=self._run_engine, args=(engine_log,), name="eventml-engine", daemon=True
            )
            self._engine_thread.start()
        self.ready = True

    def _run_engine(self, log: Log) -> None:
        from eventml.serving.engine import Engine

        try:
            self._engine = Engine(log, self.settings, group=self.options.engine_group or "serve")
        except Exception as exc:  # another member holds the group, a model fails...
            self.engine_error = str(exc) if isinstance(exc, EventmlError) else repr(exc)
            _log.error("the stream engine did not start: %s", self.engine_error)
            self._engine_ready.set()
            return
        self._engine_ready.set()
        try:
            self._pace(self._engine)
        except Exception as exc:
            self.engine_error = str(exc) if isinstance(exc, EventmlError) else repr(exc)
            _log.error("the stream engine stopped: %s", self.engine_error)
        finally:
            self._engine.close()

    def _pace(self, engine: Any) -> None:
        """Run the engine's steps, resting ``pause_s`` after a step that was not full.

        Most of what reaches ``records`` here is answered already (the engine only moves
        past it), so resting lets a batch gather instead of one transaction per few records;
        a record from a producer waits at most ``pause_s`` longer for its prediction.
        """
        from eventml.errors import GroupBusy

        busy = 0
        full = self.settings.batch_max
        while not self._engine_stop.is_set():
            try:
                n = engine.step()
                busy = 0
            except GroupBusy:
                busy += 1  # a rebalance moved partitions mid-batch (Kafka): poll again
                if busy > 3:
                    raise
                continue
            if n < full:
                self._engine_stop.wait(self.options.engine_pause_s)

    def stop(self) -> None:
        self.ready = False
        if self.writer is not None:
            self.writer.close()
        if self.rdv is not None:
            self.rdv.close()
        if self._engine_thread is not None:
            self._engine_ready.wait(60)
            self._engine_stop.set()
            self._engine_thread.join(60)
        for log in self._extra:
            log.close()

    def _sink_many(self, records: list[ev.Record], predictions: list[ev.Prediction]) -> None:
        for record, prediction in zip(records, predictions, strict=True):
            if prediction.status == "error":
                why = next((s.error for s in prediction.scores if s.error), None)
                if len(self.errors) > 10_000:
                    self.errors.clear()  # nobody collected them: never grow without bound
                self.errors[record.id] = why or "every model failed"
        if self.writer is not None:
            self.writer.many(records, predictions)

    def failure(self, record_id: str) -> str | None:
        """Why a record's answer has status ``error`` (taken once)."""
        return self.errors.pop(record_id, None)

    def _committed(self, ids: list[str], positions: list[tuple[int, int]]) -> None:
        self.metrics.batches.inc()
        self.metrics.written.inc(len(ids))
        self.metrics.pending.set(self.writer.pending if self.writer else 0)

    # -- what a name means ---------------------------------------------------------------

    @property
    def rendezvous(self) -> Rendezvous:
        if self.rdv is None:
            raise NotFound("expected a started server, got one starting or stopping")
        return self.rdv

    def route_of(self, endpoint: str) -> ev.RouteChanged | None:
        """The endpoint's newest deployed route (loaded or not), None when it has none."""
        routes = self.rendezvous.registry.routes.get(endpoint)
        return routes[-1] if routes else None

    def is_endpoint(self, name: str) -> bool:
        routes = self.rendezvous.registry.routes
        if name not in routes:
            self.rendezvous.route(name)  # folds new events now and then
        return name in routes

    def descriptor(self, ref: str) -> ev.ModelDescriptor:
        return self.rendezvous.registry.resolve(ref)

    def lead_ref(self, endpoint: str) -> str:
        """The model that answers first on an endpoint's newest route (for metadata)."""
        route = self.route_of(endpoint)
        if route is None:
            raise NotFound(f"expected an endpoint with a route, got {endpoint!r}")
        return self._lead(route)

    def _lead(self, route: ev.RouteChanged) -> str:
        key = (route.endpoint, route.version)
        found = self._leads.get(key)
        if found is None:
            spec = spec_of(route)
            refs = spec.answerers() or spec.models()
            if not refs:
                raise NotFound(f"expected a model on the route of {route.endpoint!r}, got none")
            found = self._leads[key] = refs[0]
        return found

    def serving(self, endpoint: str) -> tuple[ev.RouteChanged, LoadedModel] | None:
        """The route answering ``endpoint`` now and its lead model (None while loading)."""
        route = self.rendezvous.route(endpoint)
        if route is None:
            return None
        model = self.rendezvous.models.get(self._lead(route))
        return None if model is None else (route, model)

    def model(self, ref: str) -> tuple[ev.ModelDescriptor, LoadedModel]:
        """A loaded model (loading blocks: call from a worker thread)."""
        d = self.descriptor(ref)
        if d.name in self.unloaded or f"{d.name}:{d.version}" in self.unloaded:
            raise NotFound(f"expected a loaded model, got {d.name}:{d.version}, which was unloaded")
        return self.rendezvous.model(f"{d.name}:{d.version}")

    # -- answering -----------------------------------------------------------------------

    def _scores_inline(self, route: ev.RouteChanged | None) -> bool:
        """Whether the rendezvous answers this route without waiting on threads."""
        if route is None:
            return True  # status no_model, answered at once
        key = (route.endpoint, route.version)
        found = self._inline.get(key)
        if found is None:
            spec = spec_of(route)
            found = self._inline[key] = len(spec.roles()) == 1 and spec.decider != "first"
        return found

    async def predict(
        self, records: list[ev.Record], route: ev.RouteChanged | None = None
    ) -> list[Answer]:
        """Answer records of one endpoint with its route (:meth:`Rendezvous.predict_many`).

        On the event loop when the route answers without waiting (one model, no deadline)
        and the records should take under ``_INLINE_S`` by the route's recent seconds per
        record: a hand-off to a thread costs more than such a call. Longer batches of fast
        scoring go to as many threads as there are cores (more only take turns at the GIL);
        routes that wait (deadlines, several candidates) and slow models go to threads.
        A route's cost is the least seconds per record of its last ``_COST_WINDOW`` calls,
        measured on every path: a call made slow by a pause or by waiting for the GIL (other
        threads, a busy machine) does not move a fast model off the loop, which would only
        add threads to wait for the GIL; a model that became slow leaves it within that many
        calls. A route's first call, not yet measured, goes to a thread.

        On the loop, a request waits for the loop's next turn, so that the requests whose
        bodies arrived in the same turn are answered together (:meth:`_gathered`). Each
        request's task runs to its answer without pausing, so while requests come one at a
        time (the last gathering held one) they are answered at once, and one in
        ``_PROBE_EVERY`` waits to see whether others arrive with it (those that come after
        it in the same turn join it).
        """
        rdv = self.rendezvous
        if not records:
            return []
        if route is None:
            route = rdv.route(records[0].endpoint)
        waiters = (
            [self.writer.expect(r.id) for r in records] if self.options.sync and self.writer else []
        )
        key = (route.endpoint, route.version) if route else ("", 0)
        inline = self._scores_inline(route)
        # a route not yet measured scores on a thread: its first call may be a slow model
        costs = self._costs.get(key)
        cost = min(costs) if costs else float("inf")
        try:
            if inline and cost * len(records) < _INLINE_S:
                self._unprobed += 1
                if self._alone and self._unprobed < _PROBE_EVERY and key not in self._gathers:
                    answers = self._predict_timed(key, records)
                else:
                    answers = await self._gathered(key, records)
            elif inline and cost < _INLINE_S:
                answers = await anyio.to_thread.run_sync(
                    self._predict_timed, key, records, limiter=self._cpu
                )
            else:
                answers = await anyio.to_thread.run_sync(self._predict_timed, key, records)
        except BaseException:
            self._forget([r.id for r in records], waiters)
            raise
        counts: dict[tuple[str, str | None, int | None, str], int] = {}
        for a in answers:
            key4 = (a.endpoint, a.model, a.version, a.status)
            counts[key4] = counts.get(key4, 0) + 1
        for (endpoint, model, version, status), n in counts.items():
            self.metrics.predicted(endpoint, model, version, status, n)
        await self._wait(waiters)
        return answers

    def _gathered(
        self, key: tuple[str, int], records: list[ev.Record]
    ) -> asyncio.Future[list[Answer]]:
        """Answer on the event loop together with the other requests for this route that
        arrive before the loop's next turn: one model call and one write for them all."""
        self._unprobed = 0
        loop = asyncio.get_running_loop()
        gather = self._gathers.get(key)
        if gather is None or len(gather.records) + len(records) > _GATHER_MAX:
            gather = self._gathers[key] = _Gather()
            loop.call_soon(self._answer_gathered, key, gather)
        done: asyncio.Future[list[Answer]] = loop.create_future()
        gather.add(records, done)
        return done

    def _answer_gathered(self, key: tuple[str, int], gather: _Gather) -> None:
        if self._gathers.get(key) is gather:
            del self._gathers[key]
        self._alone = len(gather.waiting) == 1
        gather.drop_done()  # timed out while waiting: never answered, so never logged
        if not gather.waiting:
            return
        route = self.rendezvous.route(gather.records[0].endpoint)
        now = (route.endpoint, route.version) if route else ("", 0)
        if now != key and not self._scores_inline(route):
            # the route changed to one that waits (several models, a deadline): a thread
            task = asyncio.get_running_loop().create_task(self._answer_on_thread(key, gather))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        gather.settle(self._score_gathered(key, gather))

    async def _answer_on_thread(self, key: tuple[str, int], gather: _Gather) -> None:
        try:
            found = await anyio.to_thread.run_sync(self._score_gathered, key, gather)
        except BaseException as exc:
            gather.settle([RuntimeError(f"expected an answer, got {exc!r}")] * len(gather.waiting))
            raise
        gather.settle(found)

    def _score_gathered(
        self, key: tuple[str, int], gather: _Gather
    ) -> list[list[Answer] | Exception]:
        """Each waiting request's answers, or what it raises: all of them with one call,
        and when that call raises (a row no log event can hold, the log closing), each
        request again on its own, so that one request's failure is only its own."""
        try:
            answers = self._predict_timed(key, gather.records, gather.rows())
        except Exception as exc:
            if len(gather.waiting) == 1:
                return [exc]
        else:
            return [answers[start:end] for start, end, _ in gather.waiting]
        found: list[list[Answer] | Exception] = []
        for start, end, _ in gather.waiting:
            try:
                found.append(
                    self._predict_timed(key, gather.records[start:end], list(range(end - start)))
                )
            except Exception as exc:
                found.append(exc)
        return found

    def _predict_timed(
        self, key: tuple[str, int], records: list[ev.Record], rows: list[int] | None = None
    ) -> list[Answer]:
        t0 = time.perf_counter()
        answers = self.rendezvous.predict_many(records, rows)
        took = (time.perf_counter() - t0) / len(records)
        costs = self._costs.get(key)
        if costs is None:
            costs = self._costs[key] = deque(maxlen=_COST_WINDOW)
        costs.append(took)
        return answers

    async def _wait(self, waiters: list[Any]) -> None:
        if not waiters:
            return
        timeout = self.options.timeout_s

        def wait_all() -> None:
            for w in waiters:
                w.wait(timeout)

        await anyio.to_thread.run_sync(wait_all)

    def score_pinned(
        self, ref: str, rows: list[dict[str, ev.Feature]], ids: list[str] | None = None
    ) -> tuple[ev.ModelDescriptor, list[ev.Output], list[ev.Record]]:
        """Score rows with one model version directly, and log them like any answer."""
        d, model = self.model(ref)
        endpoint = d.endpoint or d.name
        t0 = time.perf_counter()
        outputs = list(model.predict_batch(rows))
        ms = (time.perf_counter() - t0) * 1000
        per_row = round(ms / max(len(rows), 1), 6)
        now = ev.now()
        records: list[ev.Record] = []
        predictions: list[ev.Prediction] = []
        for i, (row, out) in enumerate(zip(rows, outputs, strict=True)):
            rec = ev.Record(
                id=ids[i] if ids else new_id(), endpoint=endpoint, ts=now, features=row,
                answered=True,
            )  # fmt: skip
            score = ev.Score(
                model=d.name, version=d.version, digest=d.digest, role="champion",
                status="ok", output=out, latency_ms=per_row,
            )  # fmt: skip
            predictions.append(
                ev.Prediction(
                    record_id=rec.id, endpoint=endpoint, ts=now, scored_at=now, status="ok",
                    model=d.name, version=d.version, digest=d.digest, output=out,
                    latency_ms=per_row, policy="pinned", features=row, scores=[score],
                )
            )  # fmt: skip
            records.append(rec)
        if records:
            self.metrics.predicted(endpoint, d.name, d.version, "ok", len(records))
            if self.writer is not None:
                self.writer.many(records, predictions)
        return d, outputs, records

    async def pinned(
        self, ref: str, rows: list[dict[str, ev.Feature]]
    ) -> tuple[ev.ModelDescriptor, list[ev.Output], list[ev.Record]]:
        ids = [new_id() for _ in rows]
        waiters = [self.writer.expect(i) for i in ids] if self.options.sync and self.writer else []
        try:
            found = await anyio.to_thread.run_sync(self.score_pinned, ref, rows, ids)
        except BaseException:
            self._forget(ids, waiters)
            raise
        await self._wait(waiters)
        return found

    def _forget(self, ids: list[str], waiters: list[Any]) -> None:
        """Scoring failed: nothing will be written for these ids, so no waiter is kept."""
        if waiters and self.writer:
            for record_id in ids:
                self.writer.forget(record_id)

    # -- views ---------------------------------------------------------------------------

    def stats(self) -> Any:
        """The statistics view, folded incrementally from ``predictions`` (worker thread)."""
        from eventml.serving.stats import StatsView

        with self._stats_lock:
            if self._stats is None:
                self._stats = StatsView()
            return self._stats.catch_up(self.log)

    def audit(self, record_id: str) -> tuple[ev.Prediction, int, int]:
        """The prediction event of a record, and where it is (worker thread)."""
        writer = self.writer
        found = writer.index.get(record_id) if writer else None
        if found is None and writer is not None and writer.pending:
            writer.flush(timeout=5.0)
            found = writer.index.get(record_id)
        if found is None:
            found = self._scan(record_id)
        if found is None:
            raise NotFound(f"expected a record id with a prediction, got {record_id!r}")
        p, offset = found
        batch = self.log.read("predictions", p, offset, offset + 1)
        event = ev.decode(batch.values[0], ev.Prediction, where=f"predictions[{p}]@{offset}")
        return event, p, offset

    def _scan(self, record_id: str) -> tuple[int, int] | None:
        """The newest prediction of ``record_id`` by reading the topic (the index missed)."""
        if "predictions" not in self.log.topics():
            return None
        best: tuple[int, int] | None = None
        for batch in self.log.read_all("predictions"):
            for offset, value in zip(batch.offsets, batch.values, strict=True):
                if record_id.encode() in value and _read_id(value).record_id == record_id:
                    best = (batch.partition, offset)
        return best


class _Gather:
    """Requests for one route waiting for the event loop's next turn, answered together."""

    __slots__ = ("records", "waiting")

    def __init__(self) -> None:
        self.records: list[ev.Record] = []
        self.waiting: list[tuple[int, int, asyncio.Future[list[Answer]]]] = []
        """Each request's records (``records[start:end]``) and where its answers go."""

    def add(self, records: list[ev.Record], done: asyncio.Future[list[Answer]]) -> None:
        start = len(self.records)
        self.records += records
        self.waiting.append((start, len(self.records), done))

    def rows(self) -> list[int]:
        """Where each record stands in its own request."""
        return [i for start, end, _ in self.waiting for i in range(end - start)]

    def drop_done(self) -> None:
        """Forget the requests already done (cancelled by their timeout)."""
        if all(not done.done() for _, _, done in self.waiting):
            return
        kept = [(self.records[a:b], done) for a, b, done in self.waiting if not done.done()]
        self.records, self.waiting = [], []
        for records, done in kept:
            self.add(records, done)

    def settle(self, found: list[list[Answer] | Exception]) -> None:
        """Hand each waiting request its answers or its error (on the event loop)."""
        for (_, _, done), result in zip(self.waiting, found, strict=True):
            if done.done():
                continue
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)


class _Sink:
    """The rendezvous's sink: errors noted for the handler, answers queued for the log."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def __call__(self, record: ev.Record, prediction: ev.Prediction) -> None:
        self.service._sink_many([record], [prediction])

    def many(self, records: list[ev.Record], predictions: list[ev.Prediction]) -> None:
        self.service._sink_many(records, predictions)

    def write(self, answered: Answered) -> None:
        """Answers as log bytes (the short path's: answered ``ok``, no errors to note)."""
        if self.service.writer is not None:
            self.service.writer.write(answered)


def new_record(endpoint: str, fields: dict[str, Any] | None, where: str) -> ev.Record:
    """A record from the native API's shape ``{"id"?, "key"?, "ts"?, "features": {...}}``."""
    check_endpoint(endpoint)
    try:
        body = msgspec.convert(fields, _RecordBody)
    except msgspec.ValidationError as exc:
        raise InputError(
            f"expected a record {{id?, key?, ts?, features}}, got {exc}", where=where
        ) from None
    return ev.Record(
        id=body.id or new_id(), endpoint=endpoint, key=body.key, ts=body.ts or ev.now(),
        features=body.features,
    )  # fmt: skip


class _RecordBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str | None = None
    key: str | None = None
    ts: ev.UtcTime | None = None
    features: dict[str, ev.Feature]


def spec_from_body(body: bytes) -> RouteSpec:
    from eventml.serving.spec import parse_spec

    return parse_spec(body, where="request body")
