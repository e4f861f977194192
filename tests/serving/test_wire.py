"""The engine's prediction-event bytes equal msgspec's encoding of the same event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventml import events as ev
from eventml.models._wire import encode_outputs
from eventml.models.base import ClassOutputs, label_outputs, value_outputs
from eventml.serving._wire import Candidate, PredictionWriter, SoloWriter

NOW = datetime(2026, 11, 21, 5, 0, 0, 123456, tzinfo=UTC)
TS = datetime(2026, 11, 20, 23, 59, 59, 1, tzinfo=UTC)
FEATURES: dict[str, ev.Feature] = {
    "fixed acidity": 7.4,
    "alcohol": 9.4,
    "colour": "red",
    "flag": True,
    "gap": None,
}
OUTPUT = {"label": "1", "probabilities": {"0": 0.25, "1": 0.75}}


def _score(**kw: Any) -> ev.Score:
    base: dict[str, Any] = {"model": "m", "version": 3, "digest": "d" * 64, "role": "champion"}
    return ev.Score(**{**base, **kw})


CASES: list[tuple[str, dict[str, Any], list[ev.Score]]] = [
    ("champion ok", {"status": "ok", "output": OUTPUT, "latency_ms": 0.0125}, [
        _score(status="ok", output=OUTPUT, latency_ms=0.0125)]),
    ("no model", {"status": "no_model", "model": None, "version": None, "digest": None,
                  "policy": None, "route_version": None}, []),
    ("error and late", {"status": "ok", "output": {"value": 1.5}, "latency_ms": 40.0}, [
        _score(status="ok", output={"value": 1.5}, latency_ms=0.5),
        _score(model="slow", role="challenger", status="late", output={"value": 2.0}, latency_ms=90.0),
        _score(model="bad", role="shadow", status="error", latency_ms=0.1, error="ValueError: no"),
        ev.Score(model="decoy", version=0, digest="", role="decoy", status="ok"),
    ]),
    ("not processed", {"status": "not_processed", "model": None, "version": None, "digest": None,
                       "output": {"value": 0.0}, "latency_ms": 50.0}, [
        _score(status="late", output={"value": 1.0}, latency_ms=70.0)]),
    ("sixteen candidates", {"status": "no_consensus", "model": None, "version": None,
                            "digest": None}, [_score(model=f"m{i}", status="ok", output={"value": i})
                                              for i in range(16)]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "answer", "scores"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("key", ["c42", None])
def test_writer_bytes_equal_msgspec(
    name: str, answer: dict[str, Any], scores: list[ev.Score], key: str | None
) -> None:
    fields: dict[str, Any] = {
        "model": "m", "version": 3, "digest": "d" * 64, "output": None, "latency_ms": None,
        "policy": "first", "route_version": 7, **answer,
    }  # fmt: skip
    expected = ev.encode(
        ev.Prediction(
            record_id="r1", endpoint="wine", key=key, ts=TS, scored_at=NOW,
            source=ev.Source(topic="records", partition=2, offset=70_000), status=fields["status"],
            model=fields["model"], version=fields["version"], digest=fields["digest"],
            output=fields["output"], latency_ms=fields["latency_ms"], policy=fields["policy"],
            route_version=fields["route_version"], features=FEATURES, scores=scores,
        )
    )  # fmt: skip
    writer = PredictionWriter("wine", NOW, fields["policy"], fields["route_version"], "records")
    chosen = (fields["model"], fields["version"], fields["digest"]) if fields["model"] else None
    rows = [
        (Candidate(s.model, s.version, s.digest, s.role, s.latency_ms, s.error), s.status, s.output)
        for s in scores
    ]
    features = msgspec.Raw(msgspec.msgpack.encode(FEATURES))
    for output in (fields["output"], _raw(fields["output"])):
        got = writer.encode(
            "r1", key, TS, 2, 70_000, fields["status"], chosen, output, fields["latency_ms"],
            features, [(c, st, _raw(o)) for c, st, o in rows],
        )  # fmt: skip
        assert got == expected
        assert ev.decode(got, ev.Prediction).scores == scores


def _raw(output: Any) -> Any:
    return None if output is None else msgspec.Raw(msgspec.msgpack.encode(output))


def test_writer_caches_per_status_and_answer() -> None:
    writer = PredictionWriter("wine", NOW, "split", 2, "records")
    a = Candidate("a", 1, "x", "challenger", 0.5)
    b = Candidate("b", 1, "y", "challenger", 0.5)
    events = [
        writer.encode(f"r{i}", None, TS, 0, i, "ok", (m, 1, d), _raw({"value": i}), 0.5,
                      msgspec.Raw(b"\x80"), [(a, "ok", _raw({"value": i})), (b, "ok", None)])
        for i, (m, d) in enumerate([("a", "x"), ("b", "y"), ("a", "x")])
    ]  # fmt: skip
    decoded = [ev.decode(e, ev.Prediction) for e in events]
    assert [(p.record_id, p.model, p.digest, p.output) for p in decoded] == [
        ("r0", "a", "x", {"value": 0}),
        ("r1", "b", "y", {"value": 1}),
        ("r2", "a", "x", {"value": 2}),
    ]
    assert [p.source for p in decoded] == [ev.Source(topic="records", partition=0, offset=i)
                                           for i in range(3)]  # fmt: skip


@given(
    st.lists(
        st.tuples(
            st.text(max_size=40),
            st.none() | st.text(max_size=300),
            st.datetimes(timezones=st.just(UTC)),
            st.integers(0, 2**31 - 1),
            st.integers(0, 2**63 - 1),
            st.dictionaries(
                st.text(max_size=20),
                st.floats(allow_nan=False) | st.none() | st.text(),
                max_size=25,
            ),
        ),
        max_size=20,
    ),
    st.booleans(),
    st.none() | st.floats(0, 1e6),
)
def test_solo_writer_bytes_equal_the_writers(
    rows: list[tuple[str, str | None, datetime, int, int, dict[str, Any]]],
    decoy: bool,
    latency: float | None,
) -> None:
    writer = PredictionWriter("wine", NOW, "first", 7, "records")
    candidate = Candidate("m", 3, "d" * 64, "champion", latency)
    others = [(Candidate("decoy", 0, "", "decoy", None), "ok", None)] if decoy else []
    solo = SoloWriter(writer, ("m", 3, "d" * 64), candidate, latency, others)
    outputs = [_raw({"label": str(i % 3), "probabilities": {"0": i / 7}}) for i in range(len(rows))]
    expected = [
        writer.encode(i, k, t, p, o, "ok", ("m", 3, "d" * 64), out, latency,
                      msgspec.Raw(msgspec.msgpack.encode(f)), [(candidate, "ok", out), *others])
        for (i, k, t, p, o, f), out in zip(rows, outputs, strict=True)
    ]  # fmt: skip
    for as_raw in (True, False):
        got = solo.encode(
            (i, k, t, p, o, out, msgspec.Raw(msgspec.msgpack.encode(f)) if as_raw else f)
            for (i, k, t, p, o, f), out in zip(rows, outputs, strict=True)
        )
        assert got == expected
    if rows:  # and they are the events msgspec writes
        i, k, t, p, o, f = rows[0]
        event = ev.decode(expected[0], ev.Prediction)
        assert event.source is not None
        assert (event.record_id, event.key, event.ts, event.features) == (i, k, t, f)
        assert (event.source.partition, event.source.offset) == (p, o)


def _encoded(outputs: Any) -> list[bytes]:
    return [bytes(r) for r in encode_outputs(outputs)]


def _expected(outputs: Any) -> list[bytes]:
    return [msgspec.msgpack.encode(o) for o in outputs]


@given(
    st.lists(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.sampled_from(["a", "bb", "ccc", "é", "0"]), min_size=40, max_size=40),
)
def test_class_outputs_bytes_equal_msgspec(rows: list[list[float]], labels: list[str]) -> None:
    probabilities = np.array(rows)
    given_labels = label_outputs(["a", "bb", "é"], probabilities, labels[: len(rows)])
    argmax = label_outputs(["0", "1", "2"], probabilities)
    raw = label_outputs(["0", "1", "2"], probabilities, np.arange(len(rows)) % 3)
    booleans = label_outputs(["a", "bb", "é"], probabilities, np.arange(len(rows)) % 2 == 0)
    for out in (given_labels, argmax, raw, booleans):
        assert _encoded(out) == _expected(out)
    assert {o["label"] for o in booleans} <= {"True", "False"}


def test_class_outputs_with_many_classes_and_long_names() -> None:
    names = [f"class number {i} " + "x" * 40 for i in range(20)]  # str 8 names, a map 16
    probabilities = np.linspace(0, 1, 60).reshape(3, 20)
    out = label_outputs(names, probabilities)
    assert _encoded(out) == _expected(out)
    assert isinstance(out, ClassOutputs)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_value_outputs_bytes_equal_msgspec(values: list[float]) -> None:
    out = value_outputs(np.array(values))
    assert _encoded(out) == _expected(out)


def test_other_outputs_are_encoded_as_given() -> None:
    outputs = [{"scores": [1, 2]}, {"value": 3}]
    assert _encoded(outputs) == _expected(outputs)
    assert encode_outputs(label_outputs(["a"], np.empty((0, 1)))) == []
