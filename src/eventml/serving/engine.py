"""The stream engine: records joined with the model stream, exactly-once prediction events.

One step: fold new events of ``models`` (descriptors, routes), take a micro-batch of
``records`` (at most ``batch_max`` records, waiting at most ``batch_ms`` for the first),
group it by (endpoint, active route), score each group with one vectorized call, and in
one log transaction append a prediction event per record (dead letters for records that
cannot be scored) and commit the input offsets. A crash anywhere loses nothing and scores
nothing twice: the transaction lands whole or not at all, and a restart resumes after the
last commit.

Hot swap: a model named by a new route is loaded and smoke-scored on a loader thread, off
the hot path; a route without a token switches at the first batch boundary after its
models are ready; a token route switches exactly at its :class:`~eventml.events.SwapToken`
in each partition (the engine waits for the load there, so the switch point is the same on
every run). A model that fails to load yields one :class:`~eventml.events.ModelRejected`
and its route never serves: the previous route goes on. When a version leaves every route
its final statistics are appended as :class:`~eventml.events.ModelRetired`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from eventml import events as ev
from eventml.config import TOPICS, Settings, topic_partitions
from eventml.errors import EventmlError, GroupBusy, LogUnavailable, SchemaMismatch, error_text
from eventml.log import Log
from eventml.models._rows import EncodedRows
from eventml.models._wire import encode_outputs
from eventml.models.base import LoadedModel
from eventml.models.registry import Registry, load_model, parse_ref, smoke_test
from eventml.serving._wire import DECOY, Candidate, PredictionWriter, SoloWriter
from eventml.serving.canary import CanaryMonitor
from eventml.serving.rendezvous import BanditState, Context, Decision, Result, decide
from eventml.serving.routes import RECORDS, RouteTable
from eventml.serving.spec import RouteSpec, spec_of
from eventml.serving.stats import StatsView

LOGGER = logging.getLogger("eventml.serving.engine")
RETRY_S = 1.0
_BY_MODEL = frozenset({"champion", "first", "split", "bandit"})  # deciders blind to outputs
PREDICTIONS = "predictions"
DEADLETTER = "deadletter"


class _RecordIn(msgspec.Struct, frozen=True, kw_only=True, tag="Record", gc=False):
    """A record as the engine reads it: features kept as their exact bytes."""

    id: str
    endpoint: str
    key: str | None = None
    ts: ev.UtcTime
    features: msgspec.Raw
    answered: bool = False


_read_record = msgspec.msgpack.Decoder(_RecordIn | ev.SwapToken).decode


@dataclass(slots=True)
class _Item:
    partition: int
    offset: int
    value: bytes
    record: _RecordIn


def _solo(spec: RouteSpec, results: dict[str, Result]) -> Result | None:
    """The result that answers every record: a champion-only route whose model scored the
    batch, with nothing (a canary) watching its answers; else None."""
    if spec.decider != "champion" or spec.canary is not None or len(results) != 1:
        return None
    result = results.get(spec.champion or "")
    return result if result is not None and result.outputs is not None else None


@dataclass(slots=True)
class _Work:
    """A scored micro-batch, ready to commit in one transaction."""

    batches: list[Any]
    predictions: tuple[list[bytes], list[bytes | None]]
    dead: list[ev.DeadLetter]
    alarms: list[ev.CanaryAlarm]


class Engine:
    """Scores ``records`` into ``predictions`` for one consumer group."""

    def __init__(self, log: Log, settings: Settings | None = None, group: str = "engine") -> None:
        self.log = log
        self.settings = settings or log.settings
        self.group = group
        for topic in TOPICS:
            log.create_topic(topic, topic_partitions(topic, self.settings))
        self.registry = Registry()
        self.routes = RouteTable()
        self.models: dict[str, LoadedModel] = {}
        self.failed: dict[str, str] = {}
        self._loading: dict[str, Future[LoadedModel]] = {}
        self._waiting: list[ev.RouteChanged] = []
        self._retiring: list[Future[None]] = []
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="eventml-candidate")
        self._monitors: dict[tuple[str, int], CanaryMonitor] = {}
        self._bandits: dict[tuple[str, int], BanditState] = {}
        self._bandit_answers: dict[str, tuple[str, str, ev.Output | None]] = {}
        self._label_positions: dict[int, int] = {}
        self._alarms: list[ev.CanaryAlarm] = []
        self._pending: _Work | None = None  # scored, committed during the next step
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="eventml-loader")
        self._stop = threading.Event()
        self.consumer = log.consumer(group, [RECORDS])
        self._sync(initial=True)

    # -- models and routes ---------------------------------------------------------------

    def _sync(self, initial: bool = False) -> None:
        """Fold new ``models`` events; switch routes whose models are ready."""
        positions = self.consumer.positions()
        changed = False
        for event in self.registry.catch_up(self.log):
            if not isinstance(event, ev.RouteChanged):
                continue
            changed = True
            self.routes.add(event)
            for ref in spec_of(event).models():
                self._request(ref)
            if event.at_token:
                for p, offset in event.token_offsets.items():
                    if positions.get((RECORDS, p), 0) > offset:  # restarted past the token
                        self.routes.pass_token(event.endpoint, p, event.version)
            else:
                self._waiting.append(event)
        for ref in [r for r, f in self._loading.items() if f.done()]:
            self._model(ref)  # collect finished loads: a model, or a rejection
        waiting, self._waiting = self._waiting, []
        for route in waiting:
            refs = spec_of(route).models()
            if initial:
                for ref in refs:
                    self._model(ref)  # at start, wait: the first batch must use the current route
            if all(ref in self.models for ref in refs):
                self.routes.apply(route)
                changed = True
            elif not any(ref in self.failed for ref in refs):
                self._waiting.append(route)
        if changed:
            self._retire_unused()

    def _request(self, ref: str) -> None:
        if ref not in self.models and ref not in self._loading and ref not in self.failed:
            self._loading[ref] = self._loader.submit(self._load, ref)

    def _load(self, ref: str) -> LoadedModel:
        name, version = parse_ref(ref)
        descriptor = self.registry.descriptor_with_payload(self.log, name, cast(int, version))
        model = load_model(descriptor, self._resolve)
        smoke_test(model, f"model {ref}")
        return model

    def _resolve(self, ref: str) -> LoadedModel:
        """Load a model another one wraps (on the loader thread: loads it directly)."""
        d = self.registry.resolve(ref)
        return load_model(
            self.registry.descriptor_with_payload(self.log, d.name, d.version), self._resolve
        )

    def _model(self, ref: str) -> LoadedModel | None:
        """The loaded model, waiting for its load; None if it was rejected."""
        if ref in self.models:
            return self.models[ref]
        if ref in self.failed:
            return None
        self._request(ref)
        future = self._loading.pop(ref)
        try:
            model = future.result()
        except LogUnavailable:
            raise  # not the model's fault: loaded again at the next step
        except Exception as exc:  # a plugin's own failure is a rejection, never a crash
            self._reject(ref, error_text(exc))
            return None
        self.models[ref] = model
        return model

    def _reject(self, ref: str, reason: str) -> None:
        self.failed[ref] = reason
        name, version = parse_ref(ref)
        digest = self.registry.resolve(ref).digest
        if any(r.digest == digest for r in self.registry.rejected):
            return  # another engine, or an earlier run, already said so
        event = ev.ModelRejected(
            name=name, version=version, digest=digest, reason=reason, ts=ev.now()
        )
        self.log.append("models", [ev.encode(event)], partition=0)

    def _route(self, endpoint: str, partition: int) -> ev.RouteChanged | None:
        """The newest route that applies on a partition and whose model loaded."""
        for route in self.routes.candidates(endpoint, partition):
            if all(self._model(ref) is not None for ref in spec_of(route).models()):
                return route
        return None

    def _retire_unused(self) -> None:
        """Append final statistics for loaded versions that no route can use any more."""
        partitions = self.log.topics().get(RECORDS, 1)
        serving = self.routes.needed(partitions, lambda ref: ref not in self.failed)
        retired = {(r.name, r.version) for r in self.registry.retired}
        unused = [r for r in self.models if r not in serving]
        if unused:
            self._flush()  # a retired version's statistics count every prediction it made
        for ref in unused:
            model = self.models.pop(ref)
            model.close()
            name, version = parse_ref(ref)
            if (name, version) not in retired:
                digest = self.registry.resolve(ref).digest
                # folding the statistics reads every prediction: off the hot path
                self._retiring.append(
                    self._loader.submit(self._append_retired, name, cast(int, version), digest)
                )

    def _append_retired(self, name: str, version: int, digest: str) -> None:
        event = StatsView.from_log(self.log, hurry=self._stop).retired(name, version, digest)
        self.log.append("models", [ev.encode(event)], partition=0)

    # -- scoring -------------------------------------------------------------------------

    def step(self) -> int:
        """Score one micro-batch and commit it; returns how many records it held (0: caught up)."""
        return self._step(behind=False)

    def _step(self, behind: bool) -> int:
        """One micro-batch. With ``behind``, a full batch (the engine is catching up) is
        committed during the next step, while the models score that step's records: its
        insert and commit need the GIL, onnxruntime's scoring does not, and the two cores
        do both. Nothing is committed out of order: the batch before is committed first.
        The next step does not wait for records: if none are there, it commits at once."""
        try:
            self._sync()
            self._learn_rewards()
        except BaseException:
            self._drop_pending()
            raise
        # with a batch left to commit, only what is already there: none means caught up,
        # and the batch is committed now, not after waiting for records to come
        timeout = 0.0 if self._pending is not None else self.settings.batch_ms / 1000
        batches = self.consumer.poll(self.settings.batch_max, timeout)
        work: _Work | None = None
        try:
            if not batches:
                self._flush()
                return 0
            count, predictions, dead = self._score_batches(batches)
            self._flush()  # if no model ran meanwhile
            work = _Work(batches, predictions, dead, self._alarms)
            self._alarms = []
            if behind and count >= self.settings.batch_max and not work.alarms:
                self._pending = work  # an alarm lands at once: the rollback reads it
            else:
                self._commit(work)
        except BaseException:
            if work is not None:  # a monitor raises an alarm once: it must land later
                self._alarms = work.alarms + self._alarms
            self._rewind(batches)
            self._drop_pending()  # seeks last: the earlier positions win
            raise
        return count

    def _drop_pending(self) -> None:
        """Forget the batch left for the next step: its records are read and scored again."""
        if self._pending is not None:
            self._rewind(self._pending.batches)
            self._pending = None

    def _flush(self) -> None:
        """Commit the batch left for the next step, if any."""
        if self._pending is not None:
            self._commit(self._pending)
            self._pending = None

    def _score_batches(
        self, batches: list[Any]
    ) -> tuple[int, tuple[list[bytes], list[bytes | None]], list[ev.DeadLetter]]:
        groups: dict[tuple[str, int], list[_Item]] = {}
        dead: list[ev.DeadLetter] = []
        count = 0
        for batch in batches:
            p = batch.partition
            self._tokens_behind(p, batch.offsets[0])
            keys: dict[str, tuple[str, int]] = {}  # endpoint → (endpoint, route) until a token
            for offset, value, event in zip(
                batch.offsets, batch.values, self._decode(batch, dead), strict=True
            ):
                if type(event) is _RecordIn:
                    if event.answered:
                        continue  # an online request: answered and logged when it came
                    key = keys.get(event.endpoint)
                    if key is None:
                        route = self._route(event.endpoint, p)
                        key = keys[event.endpoint] = (event.endpoint, route.version if route else 0)
                    groups.setdefault(key, []).append(_Item(p, offset, value, event))
                elif isinstance(event, ev.SwapToken):
                    self._pass_token(event, p, value, offset, dead)
                    keys.clear()
            count += len(batch.values)
        predictions: list[bytes] = []
        prediction_keys: list[bytes | None] = []
        for (endpoint, version), items in groups.items():
            route = self.routes.routes.get((endpoint, version))
            scored = self._score(route, items, dead) if route else self._no_model(endpoint, items)
            predictions.extend(scored)
            # (after scoring: items that went to the dead letters are gone from the group)
            prediction_keys.extend(
                it.record.key.encode() if it.record.key else None for it in items
            )
        return count, (predictions, prediction_keys), dead

    def _rewind(self, batches: list[Any]) -> None:
        """Nothing of these batches was committed: read them again (where still assigned)."""
        for batch in batches:
            # a partition that went to another member raises: that member starts at the commit
            with contextlib.suppress(EventmlError):
                self.consumer.seek(batch.topic, batch.partition, batch.offsets[0])

    def _tokens_behind(self, partition: int, offset: int) -> None:
        """Token routes whose token this partition already passed (a partition taken over)."""
        for route in self.routes.routes.values():
            token = route.token_offsets.get(partition) if route.at_token else None
            if token is not None and token < offset:
                self.routes.pass_token(route.endpoint, partition, route.version)

    def _decode(
        self, batch: Any, dead: list[ev.DeadLetter]
    ) -> list[_RecordIn | ev.SwapToken | None]:
        """Every entry of a batch decoded; an undecodable one is a dead letter (and None)."""
        try:
            return [_read_record(v) for v in batch.values]
        except msgspec.DecodeError:
            pass
        out: list[_RecordIn | ev.SwapToken | None] = []
        for offset, value in zip(batch.offsets, batch.values, strict=True):
            try:
                out.append(_read_record(value))
            except msgspec.DecodeError as exc:
                reason = f"expected a Record or SwapToken, got {exc}"
                dead.append(self._dead(reason, value, batch.partition, offset))
                out.append(None)
        return out

    def _pass_token(
        self, token: ev.SwapToken, p: int, value: bytes, offset: int, dead: list[ev.DeadLetter]
    ) -> None:
        if (token.endpoint, token.route_version) not in self.routes.routes:
            self._sync()  # the route is on models, written in the same transaction
        if (token.endpoint, token.route_version) not in self.routes.routes:
            reason = f"expected a swap token of a deployed route, got route {token.route_version}"
            dead.append(self._dead(f"{reason} of endpoint {token.endpoint!r}", value, p, offset))
            return
        self.routes.pass_token(token.endpoint, p, token.route_version)

    def _score(
        self, route: ev.RouteChanged, items: list[_Item], dead: list[ev.DeadLetter]
    ) -> list[bytes]:
        spec = spec_of(route)
        roles = spec.roles()
        answerers = set(spec.answerers()) | ({spec.champion} if spec.champion else set())
        models = {ref: cast(LoadedModel, self._model(ref)) for ref in roles}
        rows = self._rows(items)
        while True:
            results = self._run(models, roles, rows)
            bad = next(
                (
                    r
                    for ref, r in results.items()
                    if ref in answerers and isinstance(r.error, SchemaMismatch)
                ),
                None,
            )
            if bad is None:
                break
            exc = cast(SchemaMismatch, bad.error)
            i = exc.row if exc.row is not None and exc.row < len(items) else 0
            item = items.pop(i)
            rows.pop(i)
            reason = f"{exc.message} for model {bad.ref}"
            dead.append(
                self._dead(reason, item.value, item.partition, item.offset, item.record.endpoint)
            )
            if not items:
                return []
        solo = _solo(spec, results)
        if solo is not None:
            return self._solo_predictions(route, spec, items, solo)
        ctx = Context(
            keys=[it.record.key or it.record.id for it in items],
            bandit=self._bandit(route, spec),
            metrics=self._metrics(roles) if spec.quality_metric else {},
        )
        # Candidates' outputs as MessagePack, a batch at a time (see _wire). Deciders that
        # pick by model, not by output, choose among the encoded outputs directly; the rest
        # read the dicts and their answers are encoded with the event.
        encoded = {ref: encode_outputs(r.outputs) for ref, r in results.items() if r.outputs}
        if spec.decider in _BY_MODEL or (spec.decider == "quality" and spec.quality_metric):
            blind = {
                ref: dataclasses.replace(r, outputs=cast(Any, encoded.get(ref, r.outputs)))
                for ref, r in results.items()
            }
            decisions = decide(spec, blind, len(items), ctx)
        else:
            decisions = decide(spec, results, len(items), ctx)
        return self._predictions(route, spec, items, results, encoded, decisions)

    def _solo_predictions(
        self, route: ev.RouteChanged, spec: RouteSpec, items: list[_Item], result: Result
    ) -> list[bytes]:
        """The events of a group that one model answered, every record ``ok``."""
        assert result.outputs is not None
        d = self.registry.resolve(result.ref)
        latency = round(result.latency_ms / len(items), 6)
        writer = SoloWriter(
            PredictionWriter(route.endpoint, ev.now(), spec.decider, route.version, RECORDS),
            (d.name, d.version, d.digest),
            Candidate(d.name, d.version, d.digest, result.role, latency),
            latency,
            [(DECOY, "ok", None)] if spec.decoy else [],
        )
        return writer.encode(
            (it.record.id, it.record.key, it.record.ts, it.partition, it.offset, out,
             it.record.features)
            for it, out in zip(items, encode_outputs(result.outputs), strict=True)
        )  # fmt: skip

    def _run(
        self, models: dict[str, LoadedModel], roles: dict[str, ev.Role], rows: list[Any]
    ) -> dict[str, Result]:
        """Every model scores the rows, concurrently when there are several."""
        start = time.perf_counter()

        def one(ref: str) -> Result:
            t0 = time.perf_counter()
            try:
                outputs: Sequence[ev.Output] | None = models[ref].predict_batch(rows)
                error: BaseException | None = None
            except Exception as exc:  # a model's own failure: recorded, the stream goes on
                outputs, error = None, exc
            t1 = time.perf_counter()
            return Result(ref, roles[ref], outputs, (t1 - t0) * 1000, (t1 - start) * 1000, error)

        if len(models) == 1 and self._pending is None:
            return {ref: one(ref) for ref in models}
        futures = {ref: self._pool.submit(one, ref) for ref in models}
        try:
            self._flush()  # the batch before is committed while the models score this one
        finally:
            wait(futures.values())  # if it failed: no model is left scoring behind our back
        return {ref: f.result() for ref, f in futures.items()}

    def _metrics(self, roles: dict[str, ev.Role]) -> dict[str, dict[str, float]]:
        return {ref: dict(self.registry.resolve(ref).metrics) for ref in roles}

    def _predictions(
        self,
        route: ev.RouteChanged,
        spec: RouteSpec,
        items: list[_Item],
        results: dict[str, Result],
        encoded: dict[str, list[Any]],
        decisions: list[Decision],
    ) -> list[bytes]:
        n = len(items)
        described = {ref: self.registry.resolve(ref) for ref in results}
        decided = decisions[0].decided_ms if spec.decider == "first" and decisions else None
        # one column of (candidate, statuses, outputs) per candidate
        columns: list[tuple[Candidate, list[str], Sequence[Any]]] = []
        for ref, r in results.items():
            d, latency = described[ref], round(r.latency_ms / n, 6)
            if r.outputs is None:
                failed = Candidate(
                    d.name,
                    d.version,
                    d.digest,
                    r.role,
                    latency,
                    None if r.error is None else error_text(r.error),
                )
                columns.append((failed, ["error"] * n, [None] * n))
                continue
            late = decided is not None and r.finished_ms is not None and r.finished_ms > decided
            statuses = (
                ["late" if dec.ref != ref else "ok" for dec in decisions] if late else ["ok"] * n
            )
            candidate = Candidate(d.name, d.version, d.digest, r.role, latency)
            columns.append((candidate, statuses, encoded.get(ref, r.outputs)))
        if spec.decoy:
            columns.append((DECOY, ["ok"] * n, [None] * n))
        self._watch(route, spec, results, decisions, items)
        latency_of = {ref: round(r.latency_ms / n, 6) for ref, r in results.items()}
        chosen = {ref: (d.name, d.version, d.digest) for ref, d in described.items()}
        writer = PredictionWriter(route.endpoint, ev.now(), spec.decider, route.version, RECORDS)
        out: list[bytes] = []
        for i, (item, dec) in enumerate(zip(items, decisions, strict=True)):
            rec = item.record
            out.append(
                writer.encode(
                    rec.id, rec.key, rec.ts, item.partition, item.offset, dec.status,
                    chosen[dec.ref] if dec.ref else None,
                    # an answer read as a dict (consensus, quality) goes out as its encoded bytes
                    encoded[dec.ref][i] if dec.status == "ok" and dec.ref in encoded else dec.output,
                    decided if decided is not None else (latency_of[dec.ref] if dec.ref else None),
                    # the record's exact feature bytes: what the models saw, re-encoded by nobody
                    rec.features,
                    [(c, statuses[i], outputs[i]) for c, statuses, outputs in columns],
                )
            )  # fmt: skip
        return out

    def _watch(
        self,
        route: ev.RouteChanged,
        spec: RouteSpec,
        results: dict[str, Result],
        decisions: list[Decision],
        items: list[_Item],
    ) -> None:
        """Canary windows and bandit answers, for routes that have them."""
        monitor = self._canary(route, spec)

        def answer(i: int, dec: Decision) -> ev.Output | None:
            """The answer as a dict (a decision may hold its encoded bytes)."""
            outputs = results[dec.ref].outputs if dec.ref else None
            return outputs[i] if outputs is not None else dec.output

        if monitor is not None:
            canary = results.get(monitor.spec.model)
            outputs = canary.outputs if canary else None
            for i, dec in enumerate(decisions):
                alarm = monitor.add(answer(i, dec), outputs[i] if outputs else None)
                if alarm is not None:
                    self._alarms.append(alarm)
        if spec.decider == "bandit":
            for i, (item, dec) in enumerate(zip(items, decisions, strict=True)):
                if dec.ref:
                    self._bandit_answers[item.record.id] = (route.endpoint, dec.ref, answer(i, dec))

    def _canary(self, route: ev.RouteChanged, spec: RouteSpec) -> CanaryMonitor | None:
        if spec.canary is None:
            return None
        key = (route.endpoint, route.version)
        if key not in self._monitors:
            self._monitors[key] = CanaryMonitor(route.endpoint, route.version, spec.canary)
        return self._monitors[key]

    def _bandit(self, route: ev.RouteChanged, spec: RouteSpec) -> BanditState | None:
        if spec.bandit is None:
            return None
        key = (route.endpoint, route.version)
        if key not in self._bandits:
            self._bandits[key] = BanditState(spec.bandit)
        return self._bandits[key]

    def _learn_rewards(self) -> None:
        """Fold new labels into the bandit posteriors of the answers they label."""
        if not self._bandits or "labels" not in self.log.topics():
            return
        for p, end in enumerate(self.log.end_offsets("labels")):
            start = self._label_positions.get(p, 0)
            if start >= end:
                continue
            batch = self.log.read("labels", p, start, end)
            self._label_positions[p] = batch.next_offset
            for label in ev.decode_many(batch.values, ev.Label):
                answer = self._bandit_answers.get(label.record_id or "")
                if answer is None:
                    continue
                endpoint, ref, output = answer
                for (e, _), state in self._bandits.items():
                    if e == endpoint:
                        state.reward(ref, state.reward_for(label, output))

    @staticmethod
    def _rows(items: list[_Item]) -> Any:
        """The records' features, decoded only where a model reads a row (see EncodedRows)."""
        return EncodedRows([item.record.features for item in items])

    def _no_model(self, endpoint: str, items: list[_Item]) -> list[bytes]:
        writer = PredictionWriter(endpoint, ev.now(), None, None, RECORDS)
        return [
            writer.encode(
                item.record.id, item.record.key, item.record.ts, item.partition, item.offset,
                "no_model", None, None, None, item.record.features, [],
            )
            for item in items
        ]  # fmt: skip

    @staticmethod
    def _dead(
        reason: str, value: bytes, p: int, offset: int, endpoint: str | None = None
    ) -> ev.DeadLetter:
        return ev.DeadLetter(
            reason=f"{reason} (records[{p}]@{offset})", raw=value, endpoint=endpoint,
            source=ev.Source(topic=RECORDS, partition=p, offset=offset), ts=ev.now(),
        )  # fmt: skip

    def _commit(self, work: _Work) -> None:
        values, keys = work.predictions
        dead = work.dead
        with self.log.transaction() as tx:
            if values:
                tx.append(PREDICTIONS, values, keys if any(keys) else None)
            if dead:
                dead.sort(
                    key=lambda d: (d.source.partition, d.source.offset) if d.source else (0, 0)
                )
                tx.append(DEADLETTER, [ev.encode(d) for d in dead])
            if work.alarms:  # canary alarms land with the predictions that raised them
                tx.append("models", [ev.encode(a) for a in work.alarms], partition=0)
            tx.commit_offsets(
                self.consumer, {(b.topic, b.partition): b.next_offset for b in work.batches}
            )

    # -- running -------------------------------------------------------------------------

    def run(self, until_idle: bool = False) -> int:
        """Score until stopped (or, with ``until_idle``, until caught up); returns records seen."""
        total = 0
        busy = 0
        outage: float | None = None
        while not self._stop.is_set():
            try:
                n = self._step(behind=True)
                busy = 0
            except LogUnavailable as exc:
                # a broker restart or a cut: step() committed nothing and rewound; retry
                if outage is None:
                    outage = time.monotonic()
                    LOGGER.warning("log unavailable, retrying every %g s: %s", RETRY_S, exc)
                self._stop.wait(RETRY_S)
                continue
            except GroupBusy:
                # A rebalance moved partitions mid-batch (Kafka): nothing was committed, poll
                # again. Several in a row means another member holds the group: give up.
                busy += 1
                if busy > 3:
                    raise
                continue
            if outage is not None:
                LOGGER.warning("log available again after %.1f s", time.monotonic() - outage)
                outage = None
            total += n
            if n == 0 and until_idle and not self._loading:
                break
        try:
            self._flush()  # stopped: the batch scored last is committed too
        except BaseException:
            self._drop_pending()
            raise
        return total

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()  # and retirement folds go at full speed
        for future in self._retiring:
            future.result()  # a retirement's statistics are never dropped
        self._loader.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True)
        for model in self.models.values():
            model.close()
        self.consumer.close()
