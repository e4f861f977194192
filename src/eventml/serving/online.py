"""Online requests: the rendezvous per request, answers taken by deadline, everything logged.

:meth:`Rendezvous.predict` scores a record with every model of the endpoint's route at
once (threads; models release the GIL while they compute) and answers as soon as the
route's decider can: with ``first``, the moment the schedule allows, and never after
``sla_ms``. A candidate that finishes after the answer is recorded with status ``late``; one
that raises as ``error``; one still running ``timeout_ms`` after arrival as ``timeout``. The
complete prediction event and the record (marked ``answered``, so the stream engine does
not score it again) go to the sink once every candidate is done: :class:`LogSink` appends
both in one transaction.

Routes: the newest route of the endpoint whose models are all loaded (loading happens on a
background thread when a route event arrives; until then the previous route answers). Swap
tokens are a stream notion: online requests switch as soon as a route is ready.

The common route, one model and no deadline, takes a short path worked out once per route
(:class:`_Plan`): the model scores on the caller's thread (a hand-off would only add
latency), and the answer and its prediction event are built directly, with the same fields
the general path writes. :meth:`Rendezvous.predict_many` answers the records of one request
with one ``predict_batch`` call on such a route, one prediction event per record, handed to
the sink together (one append); when the model refuses the batch, each record is answered
alone, so the failing row is named and the others are answered exactly as single requests.
Other routes answer the records one by one.

Logging every answer cost more than answering it: a ``Prediction``, a ``Score`` and a
``Source`` struct per row, built only to be encoded again. A sink with a ``write`` method
(:class:`BytesSink`: :class:`LogSink`, the API's group-commit writer) gets a short path's
answers as :class:`Answered`, log bytes assembled the way the stream engine assembles its
own (:mod:`eventml.serving._wire`): the outputs encoded a batch at a time, the features once
for both the record and its prediction, the parts every row shares once per request. The
bytes are exactly what ``events.encode`` gives for the structs the general path builds.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec

from eventml import events as ev
from eventml.errors import NotFound, SchemaMismatch, error_text
from eventml.log import Log
from eventml.models._wire import encode_outputs
from eventml.models.base import LoadedModel
from eventml.models.registry import Registry, load_model, smoke_test
from eventml.serving._wire import DECOY, MARKS, Candidate, PredictionWriter, cut
from eventml.serving.rendezvous import BanditState, Context, Result, decide, first_choice
from eventml.serving.spec import RouteSpec, spec_of

Sink = Callable[[ev.Record, ev.Prediction], None]


class BatchSink(Protocol):
    """A sink that also takes the answers of one request together (written in one append)."""

    def __call__(self, record: ev.Record, prediction: ev.Prediction) -> None: ...

    def many(self, records: list[ev.Record], predictions: list[ev.Prediction]) -> None: ...


Placed = Callable[[Sequence[int], Sequence[int]], list[bytes]]
"""Given each record's (partition, offset) on ``records``, its prediction event's bytes."""

RECORDS = "records"
_enc = msgspec.msgpack.Encoder().encode
_BATCH_ENCODE = 8
"""Rows from which outputs are encoded in numpy (:func:`encode_outputs` has a fixed cost)."""


@dataclass(slots=True, frozen=True)
class Answered:
    """One request's answers as log bytes: the records (``answered``) and their predictions.

    A prediction names its record's position on ``records`` (``source``), known only once
    the records are appended, so the predictions are made by ``predictions`` then.
    """

    ids: list[str]
    records: list[bytes]
    keys: list[bytes | None]
    predictions: Placed

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, records: list[ev.Record], predictions: list[ev.Prediction]) -> Answered:
        """Structs as a sink without :class:`BytesSink` got them, encoded as before."""
        if len(records) != len(predictions):
            raise ValueError(
                f"expected a prediction per record, got {len(predictions)} for {len(records)}"
            )

        def placed(partitions: Sequence[int], offsets: Sequence[int]) -> list[bytes]:
            return [
                ev.encode(
                    msgspec.structs.replace(
                        p, source=ev.Source(topic=RECORDS, partition=part, offset=off)
                    )
                )
                for p, part, off in zip(predictions, partitions, offsets, strict=True)
            ]

        return cls(
            [r.id for r in records],
            [ev.encode(r) for r in records],
            [r.key.encode() if r.key else None for r in records],
            placed,
        )


class BytesSink(Protocol):
    """A sink that also takes a request's answers as log bytes (:class:`Answered`)."""

    def __call__(self, record: ev.Record, prediction: ev.Prediction) -> None: ...

    def write(self, answered: Answered) -> None: ...


@dataclass(slots=True)
class Answer:
    """What a caller gets back, before the full prediction event is written."""

    record_id: str
    endpoint: str
    status: ev.PredictionStatus
    model: str | None
    version: int | None
    digest: str | None
    output: ev.Output | None
    latency_ms: float
    policy: str
    route_version: int


class LogSink:
    """Appends each answered request (record, then prediction) in one transaction."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.lock = threading.Lock()

    def __call__(self, record: ev.Record, prediction: ev.Prediction) -> None:
        self.many([record], [prediction])

    def many(self, records: list[ev.Record], predictions: list[ev.Prediction]) -> None:
        self.write(Answered.of(records, predictions))

    def write(self, answered: Answered) -> None:
        keys = answered.keys
        with self.lock, self.log.transaction() as tx:
            landed = tx.append(RECORDS, answered.records, keys if any(keys) else None)
            tx.append("predictions", answered.predictions(landed.partitions, landed.offsets))


@dataclass(slots=True, frozen=True)
class _Solo:
    """A route's only model, whose output is the answer at once (no deadline, no bandit)."""

    ref: str
    model: LoadedModel
    descriptor: ev.ModelDescriptor
    role: ev.Role
    names_error: bool
    """Whether an ``error`` answer names the model (the decider's choice; not for ``quality``)."""


@dataclass(slots=True, frozen=True)
class _Plan:
    """How an endpoint is answered now: its route, worked out once per route and loaded models."""

    route: ev.RouteChanged
    spec: RouteSpec
    roles: dict[str, ev.Role]
    solo: _Solo | None
    templates: dict[str, _Template] = field(default_factory=dict)
    """A solo route's log bytes per score status (``ok``, ``timeout``), made on first use."""


class Rendezvous:
    """Answers online requests for every endpoint of a log.

    ``sink`` takes each answered record and its prediction (default: :class:`LogSink`); a
    sink with a ``many`` method (:class:`BatchSink`) takes a batch's answers in one call, one
    with a ``write`` method (:class:`BytesSink`) takes the short path's answers as bytes.
    """

    def __init__(
        self, log: Log, sink: Sink | None = None, *, workers: int = 16, timeout_ms: float = 10_000.0
    ) -> None:
        self.log = log
        self.sink = sink or LogSink(log)
        self.timeout_ms = timeout_ms
        self.registry = Registry()
        self.models: dict[str, LoadedModel] = {}
        self.failed: dict[str, str] = {}
        self._loading: dict[str, Future[LoadedModel]] = {}
        self._lock = threading.RLock()
        self._synced = 0.0
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="eventml-rendezvous")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="eventml-online-loader")
        self._bandits: dict[tuple[str, int], BanditState] = {}
        self._answers: dict[str, tuple[tuple[str, int], str, ev.Output | None]] = {}
        self._labels_at: dict[int, int] = {}
        self._specs: dict[tuple[str, int], tuple[RouteSpec, dict[str, ev.Role]]] = {}
        self._descriptors: dict[str, ev.ModelDescriptor] = {}
        self._plans: dict[str, _Plan | None] = {}
        """endpoint → how it is answered; replaced (emptied) when routes or loaded models change."""
        many = getattr(self.sink, "many", None)
        self._many: Callable[[list[ev.Record], list[ev.Prediction]], None] | None = many
        self._write: Callable[[Answered], None] | None = getattr(self.sink, "write", None)
        self.sync(wait=True)

    # -- routes and models ---------------------------------------------------------------

    def sync(self, wait: bool = False) -> None:
        """Fold new model and route events; start loading what new routes need."""
        with self._lock:
            folded = self.registry.catch_up(self.log)
            for event in folded:
                if isinstance(event, ev.RouteChanged):
                    for ref in spec_of(event).models():
                        self._request(ref)
            if folded:
                self._plans = {}
            self._synced = time.monotonic()
            for ref in [r for r, f in self._loading.items() if f.done() or wait]:
                self._collect(ref)

    def _request(self, ref: str) -> None:
        if ref not in self.models and ref not in self._loading and ref not in self.failed:
            self._loading[ref] = self._loader.submit(self._load, ref)

    def _load(self, ref: str) -> LoadedModel:
        d = self.registry.resolve(ref)
        model = load_model(
            self.registry.descriptor_with_payload(self.log, d.name, d.version), self._load
        )
        smoke_test(model, f"model {ref}")
        return model

    def _collect(self, ref: str) -> None:
        self._plans = {}  # a route waiting for this model may answer now
        future = self._loading.pop(ref)
        try:
            self.models[ref] = future.result()
        except Exception as exc:  # a model that cannot load is refused, never served
            self.failed[ref] = error_text(exc)

    def route(self, endpoint: str) -> ev.RouteChanged | None:
        """The newest route of ``endpoint`` whose models are all loaded."""
        plan = self._plan(endpoint)
        return plan.route if plan is not None else None

    def _plan(self, endpoint: str) -> _Plan | None:
        if time.monotonic() - self._synced > 0.05:
            self.sync()
        plans = self._plans
        found = plans.get(endpoint)
        if found is not None or endpoint in plans:
            return found
        with self._lock:
            routes = self.registry.routes.get(endpoint, [])
            for route in reversed(routes):
                spec, roles = self._spec(route)
                if all(ref in self.models for ref in roles):
                    found = self._make_plan(route, spec, roles)
                    break
            if routes:  # only endpoints that exist are remembered (bounded)
                self._plans[endpoint] = found
        return found

    def _make_plan(
        self, route: ev.RouteChanged, spec: RouteSpec, roles: dict[str, ev.Role]
    ) -> _Plan:
        refs = list(roles)
        solo = None
        # one model, no deadline, no bandit: whichever decider it is, the answer is its output
        if len(refs) == 1 and spec.decider != "first" and spec.bandit is None:
            ref = refs[0]
            if ref in spec.answerers():
                solo = _Solo(
                    ref, self.models[ref], self._descriptor(ref), roles[ref],
                    names_error=spec.decider != "quality",
                )  # fmt: skip
        return _Plan(route, spec, roles, solo)

    def model(self, ref: str) -> tuple[ev.ModelDescriptor, LoadedModel]:
        """A model by ``NAME[:VERSION]``, loaded on first use (for calls that pin a version)."""
        with self._lock:
            d = self.registry.resolve(ref)
            pinned = f"{d.name}:{d.version}"
            self._request(pinned)
            if pinned in self._loading:
                self._collect(pinned)
            if pinned in self.failed:
                raise NotFound(f"model {pinned} could not be loaded: {self.failed[pinned]}")
            return d, self.models[pinned]

    # -- answering -----------------------------------------------------------------------

    def predict(self, record: ev.Record) -> Answer:
        """Answer one record by its endpoint's route (status ``no_model`` if it has none)."""
        arrival = time.perf_counter()
        plan = self._plan(record.endpoint)
        if plan is None:
            prediction = _prediction(record, "no_model", None, None, None, [], 0.0)
            self.sink(_answered(record), prediction)
            return _answer(prediction)
        if plan.solo is not None:
            return self._solo(plan, [record], arrival)[0]
        route, spec, roles = plan.route, plan.spec, plan.roles
        if len(roles) == 1 and spec.decider != "first":
            # one model and no deadline: score inline, a thread hand-off would only add latency
            (ref,) = roles
            done: Future[Result] = Future()
            done.set_result(self._score_one(ref, roles[ref], record, arrival))
            futures = {ref: done}
        else:
            futures = {
                ref: self._pool.submit(self._score_one, ref, roles[ref], record, arrival)
                for ref in roles
            }
        results = self._await(spec, futures, arrival)
        ctx = Context(
            keys=[record.key or record.id],
            bandit=self._bandit(route, spec),
            metrics=self._metrics(roles) if spec.quality_metric else {},
        )

        decision = decide(spec, results, 1, ctx)[0]
        answered_ms = (time.perf_counter() - arrival) * 1000
        chosen = self._descriptor(decision.ref) if decision.ref else None
        answer = Answer(
            record_id=record.id, endpoint=record.endpoint, status=decision.status,
            model=chosen.name if chosen else None, version=chosen.version if chosen else None,
            digest=chosen.digest if chosen else None, output=decision.output,
            latency_ms=round(answered_ms, 3), policy=spec.decider, route_version=route.version,
        )  # fmt: skip
        if spec.bandit and decision.ref:
            self._answers[record.id] = (
                (route.endpoint, route.version),
                decision.ref,
                decision.output,
            )
        self._finish_later(record, route, spec, futures, results, answer, answered_ms)
        return answer

    def predict_many(
        self, records: Sequence[ev.Record], rows: Sequence[int] | None = None
    ) -> list[Answer]:
        """Answer records of one endpoint, in order: one model call for them all when the route
        has one model and no deadline (see the module docstring), else one by one.

        ``rows``: where each record stands in its request (records of several requests
        answered together), so an error names the row of its own request; by default the
        records are one request's rows in order.
        """
        if len(records) < 2:
            return [self.predict(r) for r in records]
        arrival = time.perf_counter()
        endpoint = records[0].endpoint
        plan = self._plan(endpoint)
        if plan is None or plan.solo is None or any(r.endpoint != endpoint for r in records):
            return [self.predict(r) for r in records]
        return self._solo(plan, records, arrival, rows)

    def _solo(
        self,
        plan: _Plan,
        records: Sequence[ev.Record],
        arrival: float,
        rows: Sequence[int] | None = None,
    ) -> list[Answer]:
        """Answer records with a route's only model: one call, one prediction event each.

        ``rows``: where each record stands in its request, so an error names that row
        (default: their order).
        """
        solo = plan.solo
        if solo is None:
            raise AssertionError("unreachable: called for solo plans only")
        model, d = solo.model, solo.descriptor
        n = len(records)
        t0 = time.perf_counter()
        try:
            outputs: Sequence[ev.Output] = model.predict_batch([r.features for r in records])
            error: str | None = None
        except Exception as exc:  # a model's own failure: recorded as the row's error
            if n > 1:  # which rows fail is a per-row fact: answer each alone, as requests
                return [
                    self._solo(plan, [r], time.perf_counter(), [rows[i] if rows else i])[0]
                    for i, r in enumerate(records)
                ]
            row = rows[0] if rows else 0
            if isinstance(exc, SchemaMismatch) and exc.row == 0 and exc.where == "row 0" and row:
                exc = SchemaMismatch(exc.message, where=f"row {row}", row=row)
            outputs, error = [], error_text(exc)
        t1 = time.perf_counter()
        spec, route = plan.spec, plan.route
        finished_ms = (t1 - arrival) * 1000
        latency = round((t1 - t0) * 1000 / n, 3)
        decoy = (
            [ev.Score(model="decoy", version=0, digest="", role="decoy", status="ok")]
            if spec.decoy
            else []
        )
        now = ev.now()
        answered_ms = round((time.perf_counter() - arrival) * 1000, 3)
        answers: list[Answer] = []
        answered: list[ev.Record] = []
        predictions: list[ev.Prediction] = []
        status: ev.ScoreStatus
        if error is None and self._write is not None:
            status = "timeout" if finished_ms > self.timeout_ms else "ok"
            answers = [
                Answer(record.id, record.endpoint, "ok", d.name, d.version, d.digest, out,
                       answered_ms, spec.decider, route.version)
                for record, out in zip(records, outputs, strict=True)
            ]  # fmt: skip
            self._write(
                self._encoded(plan, records, answers, outputs, status, latency, answered_ms, now)
            )
            return answers
        if error is None:
            status = "timeout" if finished_ms > self.timeout_ms else "ok"
            for record, out in zip(records, outputs, strict=True):
                score = ev.Score(
                    model=d.name, version=d.version, digest=d.digest, role=solo.role,
                    status=status, output=out, latency_ms=latency,
                )  # fmt: skip
                answers.append(
                    Answer(record.id, record.endpoint, "ok", d.name, d.version, d.digest, out,
                           answered_ms, spec.decider, route.version)
                )  # fmt: skip
                predictions.append(
                    ev.Prediction(
                        record_id=record.id, endpoint=record.endpoint, key=record.key,
                        ts=record.ts, scored_at=now, status="ok", model=d.name,
                        version=d.version, digest=d.digest, output=out, latency_ms=answered_ms,
                        policy=spec.decider, route_version=route.version,
                        features=record.features, scores=[score, *decoy],
                    )
                )  # fmt: skip
                answered.append(msgspec.structs.replace(record, answered=True))
        else:
            (record,) = records
            named = d if solo.names_error else None
            score = ev.Score(
                model=d.name, version=d.version, digest=d.digest, role=solo.role,
                status="error", latency_ms=latency, error=error,
            )  # fmt: skip
            answer = Answer(
                record.id, record.endpoint, "error", named.name if named else None,
                named.version if named else None, named.digest if named else None, None,
                answered_ms, spec.decider, route.version,
            )  # fmt: skip
            answers.append(answer)
            predictions.append(
                _prediction(record, "error", answer, route, spec, [score, *decoy], answered_ms)
            )
            answered.append(_answered(record))
        if n == 1:
            self.sink(answered[0], predictions[0])
        elif self._many is not None:
            self._many(answered, predictions)
        else:
            for rec, prediction in zip(answered, predictions, strict=True):
                self.sink(rec, prediction)
        return answers

    def _encoded(
        self,
        plan: _Plan,
        records: Sequence[ev.Record],
        answers: list[Answer],
        outputs: Sequence[ev.Output],
        status: ev.ScoreStatus,
        latency: float,
        answered_ms: float,
        now: datetime,
    ) -> Answered:
        """The short path's answers as log bytes, equal to ``events.encode`` of the structs
        :meth:`_solo` builds for other sinks (the tests compare them)."""
        template = plan.templates.get(status)
        if template is None:
            template = plan.templates[status] = _Template(plan, status)
        raws = (
            encode_outputs(outputs)
            if len(outputs) >= _BATCH_ENCODE
            else [msgspec.Raw(_enc(a.output)) for a in answers]  # the dicts made once
        )
        return template.fill(records, raws, _enc(now), _enc(answered_ms), _enc(latency))

    def _score_one(self, ref: str, role: ev.Role, record: ev.Record, arrival: float) -> Result:
        t0 = time.perf_counter()
        try:
            outputs: Sequence[ev.Output] | None = self.models[ref].predict_batch([record.features])
            error: BaseException | None = None
        except Exception as exc:  # a model's own failure: the schedule moves on
            outputs, error = None, exc
        t1 = time.perf_counter()
        return Result(ref, role, outputs, (t1 - t0) * 1000, (t1 - arrival) * 1000, error)

    def _await(
        self, spec: RouteSpec, futures: dict[str, Future[Result]], arrival: float
    ) -> dict[str, Result]:
        """The results known when the decider can answer (all of them unless ``first``)."""
        if spec.decider != "first":
            return {ref: f.result() for ref, f in futures.items()}
        sla = float(spec.sla_ms or 0)
        opens = sorted({s.after_ms for s in spec.schedule if 0 < s.after_ms < sla} | {sla})
        while True:
            now_ms = (time.perf_counter() - arrival) * 1000
            done = {ref: f.result() for ref, f in futures.items() if f.done()}
            finished = {ref: r.finished_ms for ref, r in done.items() if r.ok}
            chosen, when = first_choice(spec.schedule, sla, finished)
            if (chosen is not None and when <= now_ms) or now_ms >= sla:
                return done
            pending = [f for f in futures.values() if not f.done()]
            next_open = next((t for t in opens if t > now_ms), sla)
            timeout = max((next_open - now_ms) / 1000, 0.0)
            if pending:
                wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                time.sleep(timeout)

    def _finish_later(
        self,
        record: ev.Record,
        route: ev.RouteChanged,
        spec: RouteSpec,
        futures: dict[str, Future[Result]],
        known: dict[str, Result],
        answer: Answer,
        answered_ms: float,
    ) -> None:
        """Write the full prediction once every candidate is done (late ones marked late)."""

        def complete(_: object = None) -> None:
            if not all(f.done() for f in futures.values()) or not claim():
                return
            results = {ref: f.result() for ref, f in futures.items()}
            scores = [self._score_entry(ref, r, ref in known) for ref, r in results.items()]
            if spec.decoy:
                scores.append(
                    ev.Score(model="decoy", version=0, digest="", role="decoy", status="ok")
                )
            prediction = _prediction(
                record, answer.status, answer, route, spec, scores, answered_ms
            )
            self.sink(_answered(record), prediction)

        claimed = threading.Lock()
        flag: list[bool] = []

        def claim() -> bool:
            with claimed:
                if flag:
                    return False
                flag.append(True)
                return True

        for f in futures.values():
            f.add_done_callback(complete)

    def _spec(self, route: ev.RouteChanged) -> tuple[RouteSpec, dict[str, ev.Role]]:
        key = (route.endpoint, route.version)
        found = self._specs.get(key)
        if found is None:
            spec = spec_of(route)
            found = self._specs[key] = (spec, spec.roles())
        return found

    def _descriptor(self, ref: str) -> ev.ModelDescriptor:
        found = self._descriptors.get(ref)
        if found is None:
            found = self._descriptors[ref] = self.registry.resolve(ref)
        return found

    def _score_entry(self, ref: str, r: Result, in_time: bool) -> ev.Score:
        d = self._descriptor(ref)
        status: ev.ScoreStatus = "error" if not r.ok else ("ok" if in_time else "late")
        if r.ok and r.finished_ms is not None and r.finished_ms > self.timeout_ms:
            status = "timeout"
        error = None if r.error is None else error_text(r.error)
        return ev.Score(
            model=d.name, version=d.version, digest=d.digest, role=r.role, status=status,
            output=r.outputs[0] if r.outputs else None, latency_ms=round(r.latency_ms, 3), error=error,
        )  # fmt: skip

    def _metrics(self, roles: dict[str, ev.Role]) -> dict[str, dict[str, float]]:
        return {ref: dict(self.registry.resolve(ref).metrics) for ref in roles}

    def _bandit(self, route: ev.RouteChanged, spec: RouteSpec) -> BanditState | None:
        if spec.bandit is None:
            return None
        key = (route.endpoint, route.version)
        with self._lock:
            if key not in self._bandits:
                self._bandits[key] = BanditState(spec.bandit)
            self.learn()
            return self._bandits[key]

    def learn(self) -> None:
        """Fold new labels into the bandit posteriors of the answers they label."""
        if "labels" not in self.log.topics():
            return
        for p, end in enumerate(self.log.end_offsets("labels")):
            start = self._labels_at.get(p, 0)
            if start >= end:
                continue
            batch = self.log.read("labels", p, start, end)
            self._labels_at[p] = batch.next_offset
            for label in ev.decode_many(batch.values, ev.Label):
                found = self._answers.pop(label.record_id or "", None)
                if found is not None:
                    key, ref, output = found
                    state = self._bandits.get(key)
                    if state is not None:
                        state.reward(ref, state.reward_for(label, output))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._loader.shutdown(wait=True, cancel_futures=True)
        for model in self.models.values():
            model.close()


_LATENCY = struct.unpack(">d", b"\x40" + os.urandom(7))[0]
"""The answer's latency stand-in: a finite float (the writer keys a cache by it, Raw is not
hashable), found by its 8 random bytes."""


class _Template:
    """A solo route's record and prediction events as constant parts and per-row slots.

    :class:`PredictionWriter` joins the parts of one event; a request's rows differ only
    in a few values (id, key, time, position, output, features, latencies), so the writer
    is run once per route with stand-ins (:data:`MARKS`) for those, and each row joins
    the parts between the stand-ins with its own values: the bytes the writer would give.
    """

    def __init__(self, plan: _Plan, status: str) -> None:
        solo, spec, route = plan.solo, plan.spec, plan.route
        if solo is None:
            raise AssertionError("unreachable: made for solo plans only")
        d = solo.descriptor
        m: list[Any] = MARKS
        candidate = Candidate(d.name, d.version, d.digest, solo.role, m[9])
        scores: list[tuple[Candidate, str, Any]] = [(candidate, status, m[8])]
        if spec.decoy:
            scores.append((DECOY, "ok", None))
        writer = PredictionWriter(route.endpoint, m[3], spec.decider, route.version, RECORDS)
        chosen = (d.name, d.version, d.digest)
        sample = writer.encode(
            m[0], m[1], m[2], m[4], m[5], "ok", chosen, m[6], _LATENCY, m[7], scores
        )
        latency = _enc(_LATENCY)
        self.prediction = cut(sample, [*m[:7], latency, *m[7:]])
        record = ev.encode(
            ev.Record(id=m[0], endpoint=route.endpoint, key=m[1], ts=m[2], features=m[7],
                      answered=True)
        )  # fmt: skip
        self.record = cut(record, [m[0], m[1], m[2], m[7]])

    def fill(
        self,
        records: Sequence[ev.Record],
        outputs: Sequence[msgspec.Raw],
        scored_at: bytes,
        latency: bytes,
        score_latency: bytes,
    ) -> Answered:
        r0, r1, r2, r3, r4 = self.record
        rows = []
        values = []
        for r, out in zip(records, outputs, strict=True):
            try:  # the features encoded once, for the record and for its prediction
                features = _enc(r.features)
            except OverflowError:
                ev.encode(r)  # raises the InputError the struct path gives (an int over 64 bits)
                raise
            row = (_enc(r.id), _enc(r.key), _enc(r.ts), out, features)
            rows.append(row)
            values.append(b"".join((r0, row[0], r1, row[1], r2, row[2], r3, row[4], r4)))
        p = self.prediction

        def placed(partitions: Sequence[int], offsets: Sequence[int]) -> list[bytes]:
            return [
                b"".join((
                    p[0], i, p[1], key, p[2], ts, p[3], scored_at, p[4], _enc(part), p[5],
                    _enc(off), p[6], out, p[7], latency, p[8], features, p[9], out, p[10],
                    score_latency, p[11],
                ))
                for (i, key, ts, out, features), part, off in zip(
                    rows, partitions, offsets, strict=True
                )
            ]  # fmt: skip

        keys = [r.key.encode() if r.key else None for r in records]
        return Answered([r.id for r in records], values, keys, placed)


def _answered(record: ev.Record) -> ev.Record:
    return msgspec.structs.replace(record, answered=True)


def _prediction(
    record: ev.Record,
    status: Any,
    answer: Answer | None,
    route: ev.RouteChanged | None,
    spec: RouteSpec | None,
    scores: list[ev.Score],
    answered_ms: float,
) -> ev.Prediction:
    return ev.Prediction(
        record_id=record.id, endpoint=record.endpoint, key=record.key, ts=record.ts,
        scored_at=ev.now(), status=status,
        model=answer.model if answer else None, version=answer.version if answer else None,
        digest=answer.digest if answer else None, output=answer.output if answer else None,
        latency_ms=round(answered_ms, 3) if answer else None,
        policy=spec.decider if spec else None, route_version=route.version if route else None,
        features=record.features, scores=scores,
    )  # fmt: skip


def _answer(p: ev.Prediction) -> Answer:
    return Answer(
        record_id=p.record_id, endpoint=p.endpoint, status=p.status, model=p.model,
        version=p.version, digest=p.digest, output=p.output, latency_ms=p.latency_ms or 0.0,
        policy=p.policy or "none", route_version=p.route_version or 0,
    )  # fmt: skip
