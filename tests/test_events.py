"""Events: MessagePack and JSON round trips (property-based), time rules, decode errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventml import events as ev
from eventml.errors import DecodeError, InputError

# hypothesis takes naive bounds and adds the zone itself
times = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
names = st.text(min_size=1, max_size=20)
int64 = st.integers(-(2**63), 2**63 - 1)
nat = st.integers(0, 2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
any_float = st.floats()
features = st.dictionaries(names, st.one_of(st.none(), st.booleans(), int64, any_float, st.text()))
outputs = st.one_of(
    st.builds(lambda v: {"value": v}, any_float),
    st.builds(
        lambda label, probs: {"label": label, "probabilities": probs},
        st.text(max_size=5),
        st.dictionaries(st.text(max_size=5), any_float, max_size=4),
    ),
)
sources = st.builds(ev.Source, topic=names, partition=st.integers(0, 99), offset=nat)
scores = st.builds(
    ev.Score,
    model=names,
    version=st.integers(1, 1000),
    digest=st.text(max_size=64),
    role=st.sampled_from(["champion", "challenger", "shadow", "canary", "decoy"]),
    status=st.sampled_from(["ok", "late", "error", "timeout"]),
    output=st.none() | outputs,
    latency_ms=st.none() | finite,
    error=st.none() | st.text(),
)
specs = st.builds(ev.TensorSpec, name=names, dtype=names, shape=st.lists(st.integers(-1, 64)))

events = st.one_of(
    st.builds(
        ev.Record, id=names, endpoint=names, key=st.none() | names, ts=times, features=features
    ),
    st.builds(
        ev.SwapToken, id=names, endpoint=names, route_version=st.integers(1, 2**63 - 1), ts=times
    ),
    st.builds(
        ev.Prediction,
        record_id=names,
        endpoint=names,
        key=st.none() | names,
        ts=times,
        scored_at=times,
        source=st.none() | sources,
        status=st.sampled_from(["ok", "no_model", "not_processed", "no_consensus", "error"]),
        model=st.none() | names,
        version=st.none() | st.integers(1, 2**63 - 1),
        digest=st.none() | names,
        output=st.none() | outputs,
        latency_ms=st.none() | finite,
        policy=st.none() | names,
        route_version=st.none() | st.integers(1, 2**63 - 1),
        features=features,
        scores=st.lists(scores, max_size=3),
    ),
    st.builds(
        ev.Label,
        record_id=st.none() | names,
        endpoint=st.none() | names,
        key=st.none() | names,
        window_start=st.none() | times,
        window_end=st.none() | times,
        value=st.one_of(finite, int64, st.text(), st.booleans()),
        ts=times,
        source=st.none() | names,
    ),
    st.builds(
        ev.ModelDescriptor,
        name=names,
        version=st.integers(1, 2**63 - 1),
        digest=names,
        format=names,
        endpoint=st.none() | names,
        description=st.text(),
        inputs=st.lists(specs, max_size=3),
        outputs=st.lists(specs, max_size=3),
        payload=st.none() | st.binary(),
        location=st.none() | names,
        size=nat,
        metrics=st.dictionaries(names, finite, max_size=3),
        lineage=st.builds(
            ev.Lineage, view=st.none() | names, parent_version=st.none() | st.integers(1, 2**63 - 1)
        ),
        created_at=times,
    ),
    st.builds(ev.ModelRejected, name=names, digest=names, reason=st.text(), ts=times),
    st.builds(
        ev.ModelRetired,
        name=names,
        version=st.integers(1, 2**63 - 1),
        digest=names,
        usage=nat,
        errors=nat,
        total_us=nat,
        min_us=st.none() | nat,
        max_us=st.none() | nat,
        since=st.none() | times,
        ts=times,
    ),
    st.builds(
        ev.RouteChanged,
        endpoint=names,
        version=st.integers(1, 2**63 - 1),
        champion=st.none() | names,
        spec=st.dictionaries(names, int64 | st.text(), max_size=3),
        reason=st.text(),
        ts=times,
    ),
    st.builds(
        ev.DeadLetter,
        reason=st.text(),
        raw=st.binary(),
        endpoint=st.none() | names,
        file=st.none() | names,
        line=st.none() | st.integers(1, 2**63 - 1),
        source=st.none() | sources,
        ts=times,
    ),
)


@given(events)
def test_msgpack_round_trip_is_exact(event: ev.Event) -> None:
    data = ev.encode(event)
    again = ev.decode(data)
    assert type(again) is type(event)
    # bytes equality also holds for NaN, which never equals itself
    assert ev.encode(again) == data


@given(events)
def test_json_round_trip_is_stable(event: ev.Event) -> None:
    # JSON has no NaN or infinity: msgspec writes them as null, so compare the JSON text
    text = ev.to_json(event)
    assert ev.to_json(ev.from_json(text)) == text


def test_json_field_names_are_the_contract() -> None:
    p = ev.Prediction(
        record_id="r1",
        endpoint="wine",
        ts=ev.parse_time("2026-01-01T00:00:00Z"),
        scored_at=ev.parse_time("2026-01-01T00:00:01Z"),
        source=ev.Source(topic="records", partition=0, offset=7),
        status="ok",
        model="lr",
        version=2,
        digest="abc",
        output={"value": 5.5},
        latency_ms=0.25,
        policy="champion",
        route_version=1,
        features={"alcohol": 9.4},
        scores=[
            ev.Score(
                model="lr",
                version=2,
                digest="abc",
                role="champion",
                status="ok",
                output={"value": 5.5},
                latency_ms=0.25,
            )
        ],
    )
    assert list(msgspec.json.decode(ev.to_json(p))) == [
        "type",
        "record_id",
        "endpoint",
        "key",
        "ts",
        "scored_at",
        "source",
        "status",
        "model",
        "version",
        "digest",
        "output",
        "latency_ms",
        "policy",
        "route_version",
        "features",
        "scores",
    ]


def test_old_events_decode_with_defaults_and_unknown_fields_are_ignored() -> None:
    old = (
        b'{"type":"Record","id":"r","endpoint":"e","ts":"2026-01-01T00:00:00Z",'
        b'"features":{},"future":1}'
    )
    rec = ev.from_json(old)
    assert rec == ev.Record(
        id="r", endpoint="e", ts=ev.parse_time("2026-01-01T00:00:00Z"), features={}
    )


def test_naive_times_are_refused() -> None:
    with pytest.raises(DecodeError) as naive:
        ev.from_json(
            b'{"type":"Record","id":"r","endpoint":"e","ts":"2026-01-01T00:00:00","features":{}}'
        )
    assert str(naive.value) == (
        "expected an eventml event, got Expected `datetime` with a timezone component - at `$.ts`"
    )
    with pytest.raises(DecodeError) as err:
        ev.parse_time("2026-01-01 10:00", where="line 3 of x.csv")
    assert str(err.value) == (
        "expected an RFC 3339 time with a zone (Z or +HH:MM), "
        "got '2026-01-01 10:00' (line 3 of x.csv)"
    )


def test_times_are_normalized_to_utc() -> None:
    t = ev.parse_time("2026-03-01T12:00:00+01:00")
    assert t == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert t.utcoffset() == timedelta(0)
    assert ev.parse_time("2026-03-01T11:00:00Z") == datetime(
        2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=1))
    )


def test_garbage_bytes_are_a_decode_error_naming_where() -> None:
    with pytest.raises(DecodeError) as err:
        ev.decode(b"\xc1garbage", where="records[0] offset 12")
    assert str(err.value).startswith("expected an eventml event, got ")
    assert str(err.value).endswith("(records[0] offset 12)")
    with pytest.raises(DecodeError, match="expected a Record event"):
        ev.decode(ev.encode(ev.Label(value=1, ts=ev.now())), ev.Record)


def test_decode_many_names_the_bad_item() -> None:
    good = ev.encode(ev.Label(value=1, ts=ev.now()))
    with pytest.raises(DecodeError, match=r"\(item 1 of the batch\)"):
        ev.decode_many([good, b"\xc1"])
    assert [e.value for e in ev.decode_many([good, good])] == [1, 1]


def test_dead_letter_text_shows_undecodable_bytes() -> None:
    dl = ev.DeadLetter(reason="bad", raw=b"caf\xe9", ts=ev.now())
    assert dl.text == "caf\\xe9"


def test_integers_beyond_64_bits_are_an_input_error() -> None:
    with pytest.raises(InputError) as err:
        ev.encode(ev.Label(value=2**64, ts=ev.now()))
    assert str(err.value) == (
        "expected integers within 64 bits, got can't serialize ints < -2**63 or > 2**64 - 1 "
        "(encoding a Label)"
    )
