"""Rendezvous and speculative serving, with real models behind latency-injecting wrappers."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.tree import DecisionTreeClassifier

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError, LogUnavailable
from eventml.ingest import SendOptions, send_file
from eventml.log import Log, open_log
from eventml.models.registry import Registry, push_model
from eventml.serving.engine import Engine
from eventml.serving.online import Answered, LogSink, Rendezvous
from eventml.serving.routes import deploy, rollback
from eventml.serving.spec import BanditSpec, CanarySpec, RouteSpec, Step, parse_spec

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
LR = WINE / "models" / "winequalityLinearRegression.pmml"
TREE = WINE / "models" / "winequalityDesisionTreeRegression.pmml"
NAMES = ("fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
         "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol")  # fmt: skip


def wine_rows() -> list[dict[str, ev.Feature]]:
    lines = (WINE / "winequality_red.csv").read_text().split("\n")
    return [dict(zip(NAMES, map(float, line.split(";")[:11]), strict=True)) for line in lines]


def record(i: int, features: dict[str, ev.Feature], key: str | None = None) -> ev.Record:
    return ev.Record(id=f"r{i}", endpoint="wine", key=key, ts=ev.now(), features=features)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Iterator[Log]:
    monkeypatch.setenv("EVENTML_TESTING", "1")
    with open_log("memory://", Settings()) as log:
        push_model(log, LR, "base")
        yield log


def push_latency(log: Log, tmp: Path, name: str, latency_ms: float, fail: bool = False) -> None:
    spec = tmp / f"{name}.json"
    body = {
        "wraps": "base:1",
        "latency_ms": latency_ms,
        "jitter_ms": 0,
        **({"fail_after": 1} if fail else {}),
    }
    spec.write_text(json.dumps(body))
    push_model(log, spec, name, format="test-latency")


SCHEDULE = [Step(model="m3"), Step(model="m2", after_ms=50), Step(model="m1", after_ms=100)]


def schedule_run(
    log: Log, tmp: Path, m3: float, m2: float, m1: float, n: int = 100
) -> tuple[list[tuple[str | None, str, float]], list[ev.Prediction]]:
    """Each answer's (model, status, latency) and the prediction events written."""
    for name, ms in (("m3", m3), ("m2", m2), ("m1", m1)):
        push_latency(log, tmp, name, ms)
    deploy(
        log,
        "wine",
        spec=RouteSpec(schedule=SCHEDULE, sla_ms=120, decider="first", default={"value": -1.0}),
    )
    written: list[ev.Prediction] = []
    rdv = Rendezvous(log, sink=lambda r, p: written.append(p))
    rows = wine_rows()
    answers: list[tuple[str | None, str, float]] = []
    for i in range(n):
        a = rdv.predict(record(i, rows[i]))
        answers.append((a.model, a.status, a.latency_ms))
    rdv.close()  # waits for every candidate: late ones are written too
    assert len(written) == n
    assert all(sorted(s.model for s in p.scores) == ["m1", "m2", "m3"] for p in written)
    return answers, written


def test_deadline_schedule_answers_from_m2_within_the_sla(log: Log, tmp_path: Path) -> None:
    # within the SLA: an answer after it would be the route's default, not_processed
    answers, _ = schedule_run(log, tmp_path, m3=80, m2=30, m1=5)
    assert [m for m, _, _ in answers] == ["m2"] * 100
    assert all(s == "ok" for _, s, _ in answers)
    assert statistics.median(t for _, _, t in answers) >= 50  # m2's step opens at 50 ms


def test_fast_m3_answers_everything(log: Log, tmp_path: Path) -> None:
    answers, _ = schedule_run(log, tmp_path, m3=20, m2=30, m1=5, n=50)
    assert {m for m, _, _ in answers} == {"m3"}


def test_slow_m2_and_m3_leave_m1_at_100_ms(log: Log, tmp_path: Path) -> None:
    answers, written = schedule_run(log, tmp_path, m3=200, m2=200, m1=5, n=30)
    assert {m for m, _, _ in answers} == {"m1"}
    assert all(t >= 100 for _, _, t in answers)  # m1's step opens at 100 ms
    # answered before m2 and m3 were done: their scores came after the answer
    assert {(s.model, s.status) for p in written for s in p.scores if s.model != "m1"} == {
        ("m2", "late"),
        ("m3", "late"),
    }


def test_every_model_too_slow_answers_at_the_sla_not_later(log: Log, tmp_path: Path) -> None:
    for name in ("m1", "m2", "m3"):
        push_latency(log, tmp_path, name, 300)
    deploy(
        log,
        "wine",
        spec=RouteSpec(schedule=SCHEDULE, sla_ms=120, decider="first", default={"value": -1.0}),
    )
    written: list[ev.Prediction] = []
    rdv = Rendezvous(log, sink=lambda r, p: written.append(p))
    rows = wine_rows()
    answers = [rdv.predict(record(i, rows[i])) for i in range(10)]
    rdv.close()
    assert {(a.status, a.model, json.dumps(a.output)) for a in answers} == {
        ("not_processed", None, '{"value": -1.0}')
    }
    assert all(a.latency_ms >= 120 for a in answers)  # the SLA, not before
    assert all({s.status for s in p.scores} == {"late"} for p in written)


def test_a_failing_model_is_an_error_and_the_schedule_moves_on(log: Log, tmp_path: Path) -> None:
    push_latency(log, tmp_path, "m3", 1, fail=True)
    push_latency(log, tmp_path, "m2", 10)
    push_latency(log, tmp_path, "m1", 1)
    deploy(log, "wine", spec=RouteSpec(schedule=SCHEDULE, sla_ms=120, decider="first"))
    written: list[ev.Prediction] = []
    rdv = Rendezvous(log, sink=lambda r, p: written.append(p))
    a = rdv.predict(record(0, wine_rows()[0]))
    rdv.close()
    assert a.model == "m2"
    statuses = {s.model: (s.status, s.error) for s in written[0].scores}
    assert statuses["m3"] == ("error", "RuntimeError: injected failure after 1 ms")
    assert statuses["m2"][0] == "ok"


def classifiers(tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 3))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0.3, "yes", np.where(x[:, 2] > 0.5, "maybe", "no"))
    models = {
        "lr": LogisticRegression(max_iter=500),
        "tree": DecisionTreeClassifier(max_depth=3, random_state=0),
        "nb": GaussianNB(),
    }
    paths = {}
    for name, model in models.items():
        model.fit(x, y)
        paths[name] = tmp / f"{name}.skops"
        sio.dump(model, paths[name])
    return paths


def stream_three_classifiers(tmp: Path, spec: RouteSpec) -> list[ev.Prediction]:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 3)) * 1.5
    data = tmp / "x.jsonl"
    data.write_text(
        "".join(
            json.dumps({"a": float(r[0]), "b": float(r[1]), "c": float(r[2])}) + "\n" for r in x
        )
    )
    with open_log(str(tmp / "log"), Settings(batch_max=64)) as log:
        for name, path in classifiers(tmp).items():
            push_model(log, path, name, features=("a", "b", "c"))
        deploy(log, "e", spec=spec)
        send_file(log, data, SendOptions(endpoint="e"))
        engine = Engine(log, log.settings)
        engine.run(until_idle=True)
        engine.close()
        preds = [ev.decode(v) for b in log.read_all("predictions") for v in b.values]
    assert len(preds) == 300
    return preds


def test_consensus_over_three_classifiers(tmp_path: Path) -> None:
    spec = RouteSpec(champion="lr", challengers=["tree", "nb"], decider="consensus")
    preds = stream_three_classifiers(tmp_path, spec)
    outcomes: Counter[str] = Counter()
    for p in preds:
        labels = {s.model: s.output["label"] for s in p.scores if s.output}
        counts = Counter(labels.values())
        label, votes = counts.most_common(1)[0]
        if votes >= 2:
            winner = next(m for m in ("lr", "tree", "nb") if labels[m] == label)
            assert (p.status, p.model, p.output) == (
                "ok",
                winner,
                next(s.output for s in p.scores if s.model == winner),
            )
            outcomes["agreed"] += 1
        else:
            assert (p.status, p.model, p.output) == ("no_consensus", None, None)
            outcomes["no_consensus"] += 1
    assert outcomes["agreed"] > 0
    assert outcomes["no_consensus"] > 0
    assert {p.policy for p in preds} == {"consensus"}


def test_quality_picks_the_most_confident(tmp_path: Path) -> None:
    spec = RouteSpec(champion="lr", challengers=["tree", "nb"], decider="quality")
    preds = stream_three_classifiers(tmp_path, spec)
    for p in preds:
        conf = {s.model: s.output["probabilities"][s.output["label"]] for s in p.scores if s.output}
        best = max(conf.values())
        winner = next(m for m in ("lr", "tree", "nb") if conf[m] == best)  # ties: first listed
        assert (p.status, p.model) == ("ok", winner)


def test_split_ten_percent_is_sticky_by_key(log: Log, tmp_path: Path) -> None:
    push_model(log, TREE, "tree")
    deploy(
        log,
        "wine",
        spec=RouteSpec(
            champion="base", split={"base": 90, "tree": 10}, split_seed=7, decider="split"
        ),
    )
    rdv = Rendezvous(log, sink=lambda r, p: None)
    row = wine_rows()[0]
    arms = {f"k{i}": rdv.predict(record(i, row, key=f"k{i}")).model for i in range(1000)}
    again = {f"k{i}": rdv.predict(record(i, row, key=f"k{i}")).model for i in range(0, 1000, 7)}
    rdv.close()
    share = sum(a == "tree" for a in arms.values()) / 1000
    assert 0.07 <= share <= 0.13
    assert all(arms[k] == a for k, a in again.items())


def test_thompson_sampling_finds_the_better_arm(log: Log, tmp_path: Path) -> None:
    push_model(log, TREE, "tree")
    deploy(
        log,
        "wine",
        spec=RouteSpec(
            decider="bandit", bandit=BanditSpec(arms=["base", "tree"], reward="label", seed=3)
        ),
    )
    rdv = Rendezvous(log, sink=lambda r, p: None)
    row = wine_rows()[0]
    rewards = random.Random(11)
    chosen = []
    for i in range(2000):
        answer = rdv.predict(record(i, row))
        chosen.append(answer.model)
        p = 0.55 if answer.model == "base" else 0.45
        label = ev.Label(record_id=f"r{i}", value=1 if rewards.random() < p else 0, ts=ev.now())
        log.append("labels", [ev.encode(label)])
    rdv.close()
    assert chosen[-500:].count("base") >= 400


def canary_stream(log: Log, folder: Path, shift: float) -> None:
    """A route with ``tree`` as canary of ``lr`` (window 200, threshold 0.5), and 600 wine
    records with ``shift`` added to their alcohol."""
    data = folder / f"shift{shift}.jsonl"
    data.write_text(
        "".join(
            json.dumps({**r, "alcohol": cast(float, r["alcohol"]) + shift}) + "\n"
            for r in wine_rows()[:600]
        )
    )
    push_model(log, LR, "lr")
    push_model(log, TREE, "tree")
    deploy(
        log,
        "wine",
        spec=RouteSpec(champion="lr", canary=CanarySpec(model="tree", window=200, threshold=0.5)),
    )
    send_file(log, data, SendOptions(endpoint="wine"))


def canary_alarms(log: Log) -> list[ev.CanaryAlarm]:
    return [
        e
        for b in log.read_all("models")
        for e in map(ev.decode, b.values)
        if isinstance(e, ev.CanaryAlarm)
    ]


def test_canary_alarm_fires_on_shift_and_stays_quiet_without(tmp_path: Path) -> None:
    def run(shift: float) -> list[ev.CanaryAlarm]:
        with open_log(str(tmp_path / f"log{shift}"), Settings(batch_max=100)) as log:
            canary_stream(log, tmp_path, shift)
            engine = Engine(log, log.settings)
            engine.run(until_idle=True)
            engine.close()
            return canary_alarms(log)

    assert run(0.0) == []
    alarms = run(6.0)
    assert [(a.state, a.canary, a.window, a.threshold) for a in alarms] == [
        ("alarm", "tree:1", 200, 0.5)
    ]
    assert alarms[0].delta > 0.5
    assert alarms[0].delta == pytest.approx(abs(alarms[0].answer_mean - alarms[0].canary_mean))


def test_a_canary_alarm_whose_commit_failed_lands_with_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The monitor raises an alarm once, when the window mean moves past the threshold;
    # the transaction that carries it fails, the batch is scored again (the monitor stays
    # in alarm, raising nothing new), and the alarm still lands, once.
    with open_log(str(tmp_path / "log"), Settings(batch_max=100)) as log:
        canary_stream(log, tmp_path, 6.0)
        real = log.transaction
        failed: list[str] = []

        class FailingAlarm:
            """The log's transaction, but the first append of an alarm fails."""

            def __enter__(self) -> FailingAlarm:
                self.cm = real()
                self.tx = self.cm.__enter__()
                return self

            def __exit__(self, *exc: Any) -> Any:
                return self.cm.__exit__(*exc)

            def append(self, topic: str, values: Any, *args: Any, **kw: Any) -> Any:
                if topic == "models" and not failed:
                    failed.append(topic)
                    raise LogUnavailable("expected a writable log, got a full disk (injected)")
                return self.tx.append(topic, values, *args, **kw)

            def commit_offsets(self, consumer: Any, offsets: Any) -> None:
                self.tx.commit_offsets(consumer, offsets)

        monkeypatch.setattr(log, "transaction", FailingAlarm)
        engine = Engine(log, log.settings)
        engine.run(until_idle=True)
        engine.close()
        alarms = canary_alarms(log)
        predicted = [
            p.record_id
            for b in log.read_all("predictions")
            for p in ev.decode_many(b.values, ev.Prediction)
        ]
    assert failed == ["models"]
    assert [(a.state, a.canary) for a in alarms] == [("alarm", "tree:1")]
    assert len(predicted) == len(set(predicted)) == 600


def test_shadow_and_decoy_are_recorded_never_returned(log: Log) -> None:
    push_model(log, TREE, "tree")
    deploy(log, "wine", spec=RouteSpec(champion="base", shadow=["tree"], decoy=True))
    written: list[ev.Prediction] = []
    rdv = Rendezvous(log, sink=lambda r, p: written.append(p))
    a = rdv.predict(record(0, wine_rows()[0]))
    rdv.close()
    assert a.model == "base"
    assert [(s.model, s.role, s.status) for s in written[0].scores] == [
        ("base", "champion", "ok"),
        ("tree", "shadow", "ok"),
        ("decoy", "decoy", "ok"),
    ]
    assert written[0].scores[1].output is not None


def test_route_specs_are_validated_and_rollback_restores(log: Log) -> None:
    with pytest.raises(InputError, match="expected a schedule and sla_ms for decider 'first'"):
        parse_spec('{"decider": "first"}')
    with pytest.raises(
        InputError, match="expected a route spec, got Object contains unknown field `champ`"
    ):
        parse_spec('{"champ": "x"}')
    push_model(log, TREE, "tree")
    deploy(log, "wine", "base")
    deploy(log, "wine", spec=RouteSpec(champion="tree", shadow=["base"]))
    back = rollback(log, "wine")
    assert (back.version, back.champion, back.spec, back.reason) == (
        3,
        "base:1",
        {},
        "rollback to route 1",
    )
    routes = Registry.from_log(log).routes["wine"]
    assert [r.champion for r in routes] == ["base:1", "tree:1", "base:1"]
    assert routes[1].spec == {"champion": "tree:1", "shadow": ["base:1"]}


def test_online_requests_are_logged_and_not_scored_again(tmp_path: Path) -> None:
    with open_log(str(tmp_path), Settings()) as log:
        push_model(log, LR, "lr")
        deploy(log, "wine", "lr")
        rdv = Rendezvous(log)
        answer = rdv.predict(record(0, wine_rows()[0]))
        rdv.close()
        engine = Engine(log, log.settings)
        assert engine.run(until_idle=True) == 1
        engine.close()
        preds = [ev.decode(v) for b in log.read_all("predictions") for v in b.values]
        recs = [ev.decode(v) for b in log.read_all("records") for v in b.values]
    assert answer.output == {"value": 5.178126058334128}
    assert [(r.id, r.answered) for r in recs] == [("r0", True)]
    assert len(preds) == 1
    assert preds[0].source == ev.Source(topic="records", partition=0, offset=0)
    assert (preds[0].model, preds[0].output) == ("lr", answer.output)


class _Collect:
    """A sink that keeps what it is given, and how: one call per record or one per request."""

    def __init__(self) -> None:
        self.records: list[ev.Record] = []
        self.predictions: list[ev.Prediction] = []
        self.calls: list[int] = []

    def __call__(self, record: ev.Record, prediction: ev.Prediction) -> None:
        self.many([record], [prediction])

    def many(self, records: list[ev.Record], predictions: list[ev.Prediction]) -> None:
        self.records.extend(records)
        self.predictions.extend(predictions)
        self.calls.append(len(records))


def _seen(p: ev.Prediction) -> tuple[object, ...]:
    """A prediction without its timings (scored_at, latencies differ from run to run)."""
    return (
        p.record_id, p.endpoint, p.key, p.ts, p.status, p.model, p.version, p.digest, p.output,
        p.policy, p.route_version, p.features,
        [(s.model, s.version, s.digest, s.role, s.status, s.output, s.error) for s in p.scores],
    )  # fmt: skip


Shown = tuple[str, str, str, str | None, int | None, str | None, ev.Output | None, str, int]


def _answered(log: Log, records: list[ev.Record], batch: bool) -> tuple[list[Shown], _Collect]:
    sink = _Collect()
    rdv = Rendezvous(log, sink=sink)
    answers = rdv.predict_many(records) if batch else [rdv.predict(r) for r in records]
    rdv.close()
    shown: list[Shown] = [
        (a.record_id, a.endpoint, a.status, a.model, a.version, a.digest, a.output, a.policy,
         a.route_version)
        for a in answers
    ]  # fmt: skip
    return shown, sink


@pytest.mark.parametrize("decoy", [False, True])
def test_a_batch_is_answered_like_single_requests(log: Log, decoy: bool) -> None:
    deploy(log, "wine", spec=RouteSpec(champion="base", decoy=decoy))
    rows = wine_rows()[:100]
    records = [record(i, row, key=f"k{i % 7}") for i, row in enumerate(rows)]
    singles, one_by_one = _answered(log, records, batch=False)
    batched, together = _answered(log, records, batch=True)
    assert batched == singles
    assert len(batched) == 100
    assert all(a[2] == "ok" for a in batched)
    assert together.calls == [100]  # the whole request handed to the sink at once
    assert one_by_one.calls == [1] * 100
    assert [_seen(p) for p in together.predictions] == [_seen(p) for p in one_by_one.predictions]
    assert [p.record_id for p in together.predictions] == [f"r{i}" for i in range(100)]
    assert together.records == one_by_one.records
    assert all(r.answered for r in together.records)


def test_a_bad_row_in_a_batch_is_named_and_the_others_are_answered(log: Log) -> None:
    deploy(log, "wine", "base")
    rows = wine_rows()[:100]
    rows[37] = {**rows[37], "alcohol": "abc"}
    records = [record(i, row) for i, row in enumerate(rows)]
    singles, one_by_one = _answered(log, records, batch=False)
    batched, together = _answered(log, records, batch=True)
    assert batched == singles
    assert [i for i, a in enumerate(batched) if a[2] != "ok"] == [37]
    assert batched[37][2:5] == ("error", "base", 1)
    errors = [s.error for p in together.predictions for s in p.scores if s.error]
    assert errors == ["expected a number for feature 'alcohol', got \"abc\" (row 37)"]
    assert [s.error for p in one_by_one.predictions for s in p.scores if s.error] == [
        "expected a number for feature 'alcohol', got \"abc\" (row 0)"
    ]
    assert [_seen(p)[:-1] for p in together.predictions] == [
        _seen(p)[:-1] for p in one_by_one.predictions
    ]
    assert len(together.predictions) == 100


def test_a_batch_on_a_route_with_several_models_is_answered_one_by_one(log: Log) -> None:
    push_model(log, TREE, "tree")
    deploy(log, "wine", spec=RouteSpec(champion="base", shadow=["tree"]))
    records = [record(i, row) for i, row in enumerate(wine_rows()[:10])]
    singles, one_by_one = _answered(log, records, batch=False)
    batched, together = _answered(log, records, batch=True)
    assert batched == singles
    assert [_seen(p) for p in together.predictions] == [_seen(p) for p in one_by_one.predictions]
    assert together.calls == [1] * 10


class _Bytes(_Collect):
    """A sink that also takes answers as log bytes, as :class:`LogSink` and the API's writer do."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[Answered] = []

    def write(self, answered: Answered) -> None:
        self.answered.append(answered)


def _logged_as_before(old: _Collect, new: _Bytes) -> None:
    """The bytes ``new`` got are ``events.encode`` of the structs ``old`` got, but for their
    timings (scoring time, latencies: taken from the bytes) and their place on ``records``."""
    assert new.calls == []  # nothing went by structs
    ids = [r.id for r in old.records]
    assert [i for a in new.answered for i in a.ids] == ids
    assert [v for a in new.answered for v in a.records] == [ev.encode(r) for r in old.records]
    assert [k for a in new.answered for k in a.keys] == [
        r.key.encode() if r.key else None for r in old.records
    ]
    logged: list[bytes] = []
    for a in new.answered:
        at = len(logged)
        partitions = [(at + i) % 3 for i in range(len(a))]
        logged += a.predictions(partitions, [1000 + at + i for i in range(len(a))])
    assert len(logged) == len(old.predictions)
    for i, (value, p) in enumerate(zip(logged, old.predictions, strict=True)):
        got = ev.decode(value, ev.Prediction)
        timed = msgspec.structs.replace(
            p, scored_at=got.scored_at, latency_ms=got.latency_ms,
            source=ev.Source(topic="records", partition=i % 3, offset=1000 + i),
            scores=[
                msgspec.structs.replace(s, latency_ms=g.latency_ms)
                for s, g in zip(p.scores, got.scores, strict=True)
            ],
        )  # fmt: skip
        assert value == ev.encode(timed)


def _both_ways(log: Log, records: list[ev.Record], batch: bool) -> tuple[_Collect, _Bytes]:
    sinks = (_Collect(), _Bytes())
    for sink in sinks:
        rdv = Rendezvous(log, sink=sink)
        answers = rdv.predict_many(records) if batch else [rdv.predict(r) for r in records]
        assert all(a.status == "ok" for a in answers)
        rdv.close()
    return sinks


@pytest.mark.parametrize("decoy", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_answers_logged_as_bytes_are_what_the_structs_encode_to(
    log: Log, decoy: bool, batch: bool
) -> None:
    deploy(log, "wine", spec=RouteSpec(champion="base", decoy=decoy))
    rows = wine_rows()[:100] if batch else wine_rows()[:1]
    records = [record(i, row, key=f"k{i}" if i % 3 else None) for i, row in enumerate(rows)]
    old, new = _both_ways(log, records, batch)
    assert len(new.answered) == (1 if batch else len(records))
    _logged_as_before(old, new)


@pytest.mark.parametrize("n", [1, 5, 100])
def test_classifier_answers_logged_as_bytes_are_what_the_structs_encode_to(
    tmp_path: Path, n: int
) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 3)) * 1.5
    with open_log("memory://", Settings()) as log:
        push_model(log, classifiers(tmp_path)["lr"], "lr", features=("a", "b", "c"))
        deploy(log, "e", spec=RouteSpec(champion="lr", decoy=True))
        records = [
            ev.Record(
                id=f"r{i}", endpoint="e", ts=ev.now(), features=dict(zip("abc", r, strict=True))
            )
            for i, r in enumerate(x.tolist())
        ]
        old, new = _both_ways(log, records, batch=True)
    _logged_as_before(old, new)


def test_log_sink_writes_the_short_path_as_bytes(log: Log) -> None:
    deploy(log, "wine", spec=RouteSpec(champion="base", decoy=True))
    records = [record(i, row, key=f"k{i}") for i, row in enumerate(wine_rows()[:20])]
    rdv = Rendezvous(log)
    answers = [*rdv.predict_many(records), rdv.predict(record(20, wine_rows()[20]))]
    rdv.close()
    recs = [ev.decode(v, ev.Record) for b in log.read_all("records") for v in b.values]
    preds = {
        (b.partition, o): ev.decode(v, ev.Prediction)
        for b in log.read_all("predictions")
        for o, v in zip(b.offsets, b.values, strict=True)
    }
    assert {r.id for r in recs} == {f"r{i}" for i in range(21)}
    assert len(recs) == 21
    assert all(r.answered for r in recs)
    positions = {
        r.id: (b.partition, o)
        for b in log.read_all("records")
        for o, r in zip(b.offsets, ev.decode_many(b.values, ev.Record), strict=True)
    }
    assert len(preds) == 21
    for p in preds.values():
        assert p.source is not None
        assert positions[p.record_id] == (p.source.partition, p.source.offset)
    by_id = {p.record_id: p for p in preds.values()}
    assert [by_id[a.record_id].output for a in answers] == [a.output for a in answers]
    assert {(p.status, p.model, p.scores[-1].role) for p in preds.values()} == {
        ("ok", "base", "decoy")
    }


@pytest.mark.parametrize("batch", [False, True])
def test_an_int_over_64_bits_is_refused_by_the_bytes_path_as_by_the_structs(
    log: Log, batch: bool
) -> None:
    deploy(log, "wine", "base")
    rows = wine_rows()[:3]
    rows[1] = {**rows[1], "alcohol": 2**70}
    records = [record(i, row) for i, row in enumerate(rows)]
    for sink in (_Bytes(), LogSink(log)):
        rdv = Rendezvous(log, sink=sink)
        with pytest.raises(InputError, match="expected integers within 64 bits"):
            if batch:
                rdv.predict_many(records)
            else:
                rdv.predict(records[1])
        rdv.close()
