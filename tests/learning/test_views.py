"""Labels and training views: exact rows, features as the log holds them, hashes, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError
from eventml.learning.labels import append_labels, labels_from_json, parse_window, read_label_file
from eventml.learning.views import View, ViewSpec, build_view, read_view, write_view
from eventml.log import Log, open_log
from tests.learning.helpers import BASE, at, record_labels, write_predictions


@pytest.fixture
def log() -> Log:
    return open_log("memory://", Settings())


def labels_end(log: Log) -> int:
    return sum(log.end_offsets("labels")) if "labels" in log.topics() else 0


def test_view_holds_exactly_the_labelled_predictions_with_their_features(log: Log) -> None:
    preds = write_predictions(log, 300)
    labelled = preds[::3]
    append_labels(log, record_labels([p.record_id for p in labelled], [i % 2 for i in range(100)]))
    view = build_view(log, ViewSpec(endpoint="churn"))
    rows = view.table.to_pylist()
    assert view.rows == 100
    assert [r["record_id"] for r in rows] == [p.record_id for p in labelled]
    by_id = {p.record_id: p for p in preds}
    for r in rows:
        assert msgspec.json.decode(r["features"]) == by_id[r["record_id"]].features
        for name, value in by_id[r["record_id"]].features.items():
            assert r[f"feature.{name}"] == value
    assert [r["label"] for r in rows] == ["0", "1"] * 50
    assert view.labels == {"0": 50, "1": 50}
    assert len(view.features) == 20
    # time split: the latest 20 rows are held out
    assert [r["split"] for r in rows] == ["train"] * 80 + ["validation"] * 20
    assert view.cutoff == labelled[80].ts


def test_same_view_twice_same_hash_and_relabel_changes_it(log: Log) -> None:
    preds = write_predictions(log, 50)
    ids = [p.record_id for p in preds[:40]]
    append_labels(log, record_labels(ids, [0] * 40))
    first = build_view(log, ViewSpec(endpoint="churn"))
    assert build_view(log, ViewSpec(endpoint="churn")).hash == first.hash
    append_labels(log, record_labels([ids[7]], [1], ts=at(999)))
    second = build_view(log, ViewSpec(endpoint="churn"))
    assert second.hash != first.hash
    assert second.rows == 40
    assert second.table["label"].to_pylist()[7] == "1"
    assert second.labels == {"0": 39, "1": 1}
    # nothing was updated in place: both labels of the record are on the log
    assert labels_end(log) == 41
    # the latest by arrival wins, even with an older label time
    append_labels(log, record_labels([ids[7]], [0], ts=BASE - timedelta(days=1)))
    third = build_view(log, ViewSpec(endpoint="churn"))
    assert third.table["label"].to_pylist()[7] == "0"
    assert third.hash not in (first.hash, second.hash)  # the label time is part of the row
    append_labels(log, record_labels([ids[7]], [0], ts=BASE))
    assert build_view(log, ViewSpec(endpoint="churn")).hash == first.hash


def test_view_file_round_trip_keeps_the_hash(log: Log, tmp_path: Path) -> None:
    preds = write_predictions(log, 20)
    append_labels(log, record_labels([p.record_id for p in preds], [1, 0] * 10))
    view = build_view(log, ViewSpec(endpoint="churn"))
    write_view(view, tmp_path / "v.parquet")
    again = read_view(tmp_path / "v.parquet")
    assert (again.hash, again.rows, again.features) == (view.hash, 20, view.features)
    assert again.cutoff == view.cutoff == preds[16].ts


def test_entity_labels_attach_within_their_window(log: Log) -> None:
    records = [
        ev.Prediction(record_id=f"k{i}", endpoint="churn", key="alice", ts=BASE + timedelta(days=i),
                      scored_at=BASE, status="no_model", features={"a": float(i)})
        for i in range(10)
    ]  # fmt: skip
    log.append("predictions", [ev.encode(p) for p in records])
    label = ev.Label(
        endpoint="churn", key="alice", window_start=BASE + timedelta(days=3),
        window_end=BASE + timedelta(days=6), value="churned", ts=BASE + timedelta(days=6),
    )  # fmt: skip
    append_labels(log, [label])
    view = build_view(log, ViewSpec(endpoint="churn", validation=0))
    assert view.table["record_id"].to_pylist() == ["k3", "k4", "k5", "k6"]
    assert set(view.table["label"].to_pylist()) == {"churned"}
    # a record label arriving later supersedes the entity label for that record
    append_labels(log, [ev.Label(record_id="k4", value="stayed", ts=BASE)])
    view = build_view(log, ViewSpec(endpoint="churn", validation=0))
    assert view.table["label"].to_pylist() == ["churned", "stayed", "churned", "churned"]


def test_entity_label_file_with_window(log: Log, tmp_path: Path) -> None:
    write_predictions(log, 10)  # keys c000000..c000009, one a minute from BASE
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "endpoint,key,ts,value\n"
        "churn,c000002,2026-01-01T00:30:00Z,1\n"
        "churn,c000003,2026-01-01T00:30:00Z,0\n"
    )
    labels = read_label_file(path, window=parse_window("30m"))
    assert [(lb.key, lb.window_start, lb.window_end, lb.value) for lb in labels] == [
        ("c000002", at(0), at(30), 1),
        ("c000003", at(0), at(30), 0),
    ]
    append_labels(log, labels)
    view = build_view(log, ViewSpec(endpoint="churn", validation=0))
    assert view.table["record_id"].to_pylist() == ["r000002", "r000003"]
    too_short = read_label_file(path, window=parse_window("20m"))  # c000002 is at minute 2
    with pytest.raises(InputError) as exc:
        append_labels(log, too_short)
    assert str(exc.value) == (
        "expected a prediction of each entity within its label window, got none for "
        "churn/c000002 [2026-01-01T00:10:00+00:00, 2026-01-01T00:30:00+00:00]; "
        "churn/c000003 [2026-01-01T00:10:00+00:00, 2026-01-01T00:30:00+00:00]"
    )


def test_filters_by_model_status_and_time(log: Log) -> None:
    preds = [
        ev.Prediction(record_id=f"p{i}", endpoint="churn", ts=at(i), scored_at=at(i),
                      status="ok" if i % 2 else "error", model="m", version=1 + i % 3,
                      output={"label": "1", "probabilities": {"0": 0.2, "1": 0.8}},
                      features={"a": float(i)})
        for i in range(30)
    ]  # fmt: skip
    log.append("predictions", [ev.encode(p) for p in preds])
    append_labels(log, record_labels([p.record_id for p in preds], [1] * 30))

    def ids(**kw: object) -> list[str]:
        spec = msgspec.convert({"endpoint": "churn", **kw}, ViewSpec)
        got: list[str] = build_view(log, spec).table["record_id"].to_pylist()
        return got

    assert ids(model="m:2") == [f"p{i}" for i in range(1, 30, 3)]
    assert ids(status="ok", model="m:1") == [f"p{i}" for i in (3, 9, 15, 21, 27)]
    assert ids(since=at(10), until=at(13)) == ["p10", "p11", "p12"]
    view = build_view(log, ViewSpec(endpoint="churn", until=at(2)))
    assert view.table["served_label"].to_pylist() == ["1", "1"]


def test_stratified_sample_is_exact_and_seeded(log: Log) -> None:
    preds = write_predictions(log, 400)
    values = [1 if i % 4 == 0 else 0 for i in range(400)]  # 100 ones, 300 zeros
    append_labels(log, record_labels([p.record_id for p in preds], values))
    spec = ViewSpec(endpoint="churn", sample=0.1, stratify=True, seed=7)
    a, b = build_view(log, spec), build_view(log, spec)
    assert a.labels == {"1": 10, "0": 30}
    assert a.hash == b.hash
    other = build_view(log, ViewSpec(endpoint="churn", sample=0.1, stratify=True, seed=8))
    assert other.labels == {"1": 10, "0": 30}
    assert other.table["record_id"].to_pylist() != a.table["record_id"].to_pylist()
    ts = a.table["ts"].to_pylist()
    assert ts == sorted(ts)


def test_unknown_record_ids_are_refused_and_nothing_written(log: Log) -> None:
    preds = write_predictions(log, 5)
    batch = record_labels([preds[0].record_id, "nope-2", "nope-1"], [1, 0, 1])
    with pytest.raises(InputError) as exc:
        append_labels(log, batch)
    assert str(exc.value) == (
        "expected labels for predicted records, got 2 unknown record id(s): nope-1, nope-2"
    )
    assert labels_end(log) == 0


def test_unparsable_label_files_are_refused(log: Log, tmp_path: Path) -> None:
    cases = {
        "bad_ts.csv": (
            "record_id,value,ts\nr000000,1,yesterday\n",
            "expected an RFC 3339 time, got 'yesterday' (line 2 of bad_ts.csv)",
        ),
        "empty_value.csv": (
            "record_id,value\nr000000,1\nr000001,\n",
            "expected a label value, got an empty field (line 3 of empty_value.csv)",
        ),
        "fields.csv": (
            "record_id,value\nr000000,1,2\n",
            "expected 2 fields, got 3 (line 2 of fields.csv)",
        ),
        "header.csv": (
            "id,label\nr000000,1\n",
            "expected a header row record_id,value[,ts] or endpoint,key,ts,value, got ['id', 'label'] "
            "(line 1 of header.csv)",
        ),
        "nan.csv": (
            "record_id,value\nr000000,nan\n",
            'expected a finite label value, got "nan" (line 2 of nan.csv)',
        ),
        "bad.jsonl": (
            '{"record_id": "r000000", "value": 1}\n{"record_id": "r000001"\n',
            "expected a JSON object, got invalid JSON: Input data was truncated (line 2 of bad.jsonl)",
        ),
        "noid.jsonl": (
            '{"value": 1, "key": "c1"}\n',
            "expected record_id, or endpoint, key and ts, got no endpoint, ts (line 1 of noid.jsonl)",
        ),
    }
    write_predictions(log, 3)
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError) as exc:
            read_label_file(path)
        assert str(exc.value) == message, name
    with pytest.raises(InputError) as exc:
        parse_window("30 days")
    assert str(exc.value) == 'expected a positive duration like 30d, 12h, 90m or 45s, got "30 days"'
    assert labels_end(log) == 0


def test_jsonl_labels_keep_value_types(log: Log, tmp_path: Path) -> None:
    write_predictions(log, 3)
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"record_id": "r000000", "value": 1, "ts": "2026-01-02T00:00:00Z"}\n'
        '{"record_id": "r000001", "value": 2.5}\n'
        '{"record_id": "r000002", "value": true}\n'
    )
    labels = read_label_file(path)
    assert [lb.value for lb in labels] == [1, 2.5, True]
    assert labels[0].ts == ev.parse_time("2026-01-02T00:00:00Z")
    append_labels(log, labels)
    view = build_view(log, ViewSpec(endpoint="churn", validation=0))
    assert view.table["label"].to_pylist() == ["1", "2.5", "true"]
    assert view.table["label_value"].to_pylist() == [1.0, 2.5, 1.0]
    assert Counter(view.table["label_json"].to_pylist()) == Counter(["1", "2.5", "true"])


def test_empty_view_says_what_it_looked_for(log: Log) -> None:
    with pytest.raises(InputError) as exc:
        build_view(log, ViewSpec(endpoint="churn"))
    assert str(exc.value) == (
        "expected labelled predictions for endpoint 'churn', got none "
        "(0 predictions and 0 labels on the log match no row)"
    )
    preds = write_predictions(log, 5)
    append_labels(log, record_labels([preds[0].record_id], [1]))
    with pytest.raises(InputError) as exc:
        build_view(log, ViewSpec(endpoint="churn", since=at(60)))
    assert str(exc.value) == (
        "expected labelled predictions for endpoint 'churn', got none "
        "(5 predictions and 1 labels on the log match no row of the filters)"
    )


def test_labels_from_a_json_body(log: Log) -> None:
    preds = write_predictions(log, 3)
    body = msgspec.json.decode(
        b'[{"record_id": "r000000", "value": 1}, {"endpoint": "churn", "key": "c000001",'
        b' "ts": "2026-01-01T00:05:00Z", "value": 0}]'
    )
    labels = labels_from_json(body, source="api")
    assert [(lb.record_id, lb.key, lb.value, lb.source) for lb in labels] == [
        ("r000000", None, 1, "api"),
        (None, "c000001", 0, "api"),
    ]
    summary = append_labels(log, labels)
    assert (summary.appended, summary.by_record, summary.by_entity) == (2, 1, 1)
    view = build_view(log, ViewSpec(endpoint="churn", validation=0))
    assert view.table["record_id"].to_pylist() == [preds[0].record_id, preds[1].record_id]
    with pytest.raises(InputError) as exc:
        labels_from_json(
            [{"record_id": "r000000", "value": 1}, {"record_id": "r000001", "value": None}]
        )
    assert str(exc.value) == "expected a field 'value', got ['record_id', 'value'] (item 1)"
    with pytest.raises(InputError) as exc:
        labels_from_json({"record_id": "r000000"})
    assert str(exc.value) == "expected a JSON list of labels, got a dict"


def fresh(log: Log, folder: Path, spec: ViewSpec) -> View:
    """The view folded from scratch: the stored folds removed first."""
    shutil.rmtree(folder, ignore_errors=True)
    return build_view(log, spec)


def test_stored_fold_brought_up_to_date_equals_a_fresh_fold(tmp_path: Path) -> None:
    log = open_log(str(tmp_path), Settings(partitions=2))
    folder = tmp_path / "log.sqlite.views"
    preds = write_predictions(log, 120)
    append_labels(log, record_labels([p.record_id for p in preds[:60]], [i % 2 for i in range(60)]))
    first = build_view(log, ViewSpec(endpoint="churn"))
    assert sorted(p.name for p in folder.iterdir())[0] == "labels.arrow"
    # more predictions, one of another layout, a relabel and new labels since the fold
    more = [
        ev.Prediction(record_id=f"n{i}", endpoint="churn", key="k", ts=at(i), scored_at=at(i),
                      status="ok", model="m", version=1, features={"a": float(i), "b": i},
                      output={"label": "1", "probabilities": {"0": 0.25, "1": 0.75}})
        for i in range(10)
    ]  # fmt: skip
    log.append("predictions", [ev.encode(p) for p in more], partition=1)
    append_labels(log, record_labels([preds[3].record_id, "n2", "n5"], [1, 0, 1], ts=at(500)))
    for spec in (ViewSpec(endpoint="churn"), ViewSpec(endpoint="churn", labelled=False)):
        warm = build_view(log, spec)
        cold = fresh(log, folder, spec)
        assert warm.table.equals(cold.table)
        assert (warm.hash, warm.features, warm.labels) == (cold.hash, cold.features, cold.labels)
    assert warm.hash != first.hash
    view = build_view(log, ViewSpec(endpoint="churn"))
    assert view.rows == 62
    rows = {r["record_id"]: r for r in view.table.to_pylist()}
    assert (rows[preds[3].record_id]["label"], rows["n2"]["label"], rows["n5"]["label"]) == (
        "1", "0", "1",
    )  # fmt: skip
    assert msgspec.json.decode(rows["n2"]["features"]) == {"a": 2.0, "b": 2}
    assert (rows["n2"]["feature.b"], rows["n2"]["served_label"]) == (2.0, "1")


def test_stored_fold_of_another_log_is_not_used(tmp_path: Path) -> None:
    log = open_log(str(tmp_path), Settings())
    write_predictions(log, 30)
    append_labels(log, record_labels([f"r{i:06d}" for i in range(30)], [1] * 30))
    build_view(log, ViewSpec(endpoint="churn"))
    log.close()
    for path in tmp_path.glob("log.sqlite*"):
        if path.is_file():
            path.unlink()
    log = open_log(str(tmp_path), Settings())  # a new log at the same path, same offsets
    preds = write_predictions(log, 30, seed=9)
    append_labels(log, record_labels([p.record_id for p in preds], [0] * 30))
    view = build_view(log, ViewSpec(endpoint="churn"))
    assert view.labels == {"0": 30}
    spec = ViewSpec(endpoint="churn")
    assert view.table.equals(fresh(log, tmp_path / "log.sqlite.views", spec).table)
    log.close()


def test_a_fold_that_cannot_be_kept_still_gives_the_view(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = open_log(str(tmp_path), Settings())
    (tmp_path / "log.sqlite.views").write_text("not a folder")  # the cache cannot be written
    write_predictions(log, 20)
    append_labels(log, record_labels([f"r{i:06d}" for i in range(20)], [1] * 10 + [0] * 10))
    with caplog.at_level("WARNING", logger="eventml.learning.views"):
        view = build_view(log, ViewSpec(endpoint="churn"))
    assert (view.table.num_rows, view.labels) == (20, {"1": 10, "0": 10})
    assert "could not keep the fold in" in caplog.text
    assert (tmp_path / "log.sqlite.views").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []
    log.close()


def test_a_stored_fold_grows_by_segments_and_is_written_whole_every_eight(tmp_path: Path) -> None:
    log = open_log(str(tmp_path), Settings(partitions=2))
    folder = tmp_path / "log.sqlite.views"
    preds = write_predictions(log, 40)
    append_labels(log, record_labels([p.record_id for p in preds], [i % 2 for i in range(40)]))
    spec = ViewSpec(endpoint="churn", labelled=False)
    build_view(log, spec)

    def files() -> list[int]:
        """How many files each stored fold has (labels, predicted, predictions): base and
        segments. ``predicted`` (what labels are checked against) grows as labels arrive."""
        names = Counter(p.name.split("+")[0].removesuffix(".arrow") for p in folder.glob("*.arrow"))
        return [n for _, n in sorted(names.items())]

    assert files() == [1, 1, 1]
    # what a killed writer left (a finished process's pid) and what a live one is writing
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    dead = folder / f"labels+0123456789abcdef.arrow.{gone}-1.tmp"
    live = folder / f"labels+0123456789abcdef.arrow.{os.getpid()}-1.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    for update in range(1, 10):
        more = [
            ev.Prediction(record_id=f"u{update}-{i}", endpoint="churn", key="k", ts=at(100 + i),
                          scored_at=at(100 + i), status="no_model", features=preds[i].features)
            for i in range(3)
        ]  # fmt: skip
        log.append("predictions", [ev.encode(p) for p in more], partition=update % 2)
        append_labels(log, record_labels([f"u{update}-0"], [update % 2], ts=at(500)))
        chained = build_view(log, spec)  # the last one read from the base and 8 segments
        # one segment per update for both folds, until the ninth writes each fold whole
        assert files() == ([1 + update] * 3 if update < 9 else [1, 1, 1])
        if update == 4:  # the newest segment gone: the chain ends before it, the rest is
            # folded from the log again and kept as that segment
            last = max(folder.glob("predictions-*+*.arrow"), key=lambda p: p.stat().st_mtime_ns)
            last.unlink()
            assert files() == [5, 5, 4]
            build_view(log, spec)
            assert files() == [5, 5, 5]
    assert (dead.exists(), live.exists()) == (False, True)  # the ninth update cleared up
    live.unlink()
    warm = build_view(log, spec)  # read from the fold written whole from the chain
    cold = fresh(log, folder, spec)
    assert warm.table.equals(cold.table)
    assert chained.table.equals(cold.table)
    assert (warm.rows, warm.labels, warm.hash) == (67, cold.labels, cold.hash)
    # the labels just appended were checked against the stored fold of what was predicted
    with pytest.raises(InputError) as exc:
        append_labels(log, record_labels(["u9-1", "u10-0"], [1, 1]))
    assert str(exc.value) == (
        "expected labels for predicted records, got 1 unknown record id(s): u10-0"
    )
    log.close()
