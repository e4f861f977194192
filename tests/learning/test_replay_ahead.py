"""Replay scores the fold's rows on a worker while the view is built: same answers, view order."""

from __future__ import annotations

import importlib
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError
from eventml.learning.labels import append_labels
from eventml.learning.replay import Replay, compare, replay
from eventml.learning.score import score
from eventml.learning.train import fit
from eventml.learning.views import ViewSpec, build_view, replay_view
from eventml.log import Log, open_log
from eventml.models.registry import Registry, load_model, push_model
from tests.learning.helpers import BASE, churn_records, record_labels

replay_module = importlib.import_module("eventml.learning.replay")  # the package exports replay()


def shuffled_log(tmp_path: Path) -> Log:
    """900 churn predictions appended out of time order, 600 labelled, model churn:1 (ONNX)."""
    log = open_log(str(tmp_path / "data"), Settings())
    records, y = churn_records(0, 900)
    order = np.random.default_rng(7).permutation(len(records))  # appended out of time order
    preds = [
        ev.Prediction(record_id=r.id, endpoint="churn", key=r.key, ts=r.ts, scored_at=r.ts,
                      status="no_model", features=r.features)
        for r in records
    ]  # fmt: skip
    log.append("predictions", [ev.encode(preds[i]) for i in order])
    append_labels(log, record_labels([r.id for r in records[:600]], y[:600]))
    path = tmp_path / "churn.onnx"
    path.write_bytes(fit(build_view(log, ViewSpec(endpoint="churn")), "logreg").onnx)
    push_model(log, path, "churn")
    return log


def in_turn(log: Log, since: datetime, until: datetime) -> Replay:
    """The replay with every step in turn: the view, then its table scored."""
    view = replay_view(
        log, ViewSpec(endpoint="churn", since=since, until=until, labelled=False, validation=0)
    )
    model = load_model(Registry.from_log(log).descriptor_with_payload(log, "churn", 1))
    return compare(score(model, view.table, "churn:1"), view.table, "churn:1", "churn")


def test_answers_scored_ahead_in_log_order_land_on_their_rows_in_view_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = shuffled_log(tmp_path)
    made: list[str] = []  # the served side of the comparison, made while the worker scores

    real = replay_module._Served

    def served(*args: Any) -> Any:
        made.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(replay_module, "_Served", served)
    since, until = BASE + timedelta(minutes=100), BASE + timedelta(minutes=700)

    threads: set[str] = set()
    done: list[tuple[int, int]] = []

    def progress(n: int, total: int) -> None:
        threads.add(threading.current_thread().name)
        done.append((n, total))

    got = replay(log, "churn:1", "churn", since=since, until=until, progress=progress)
    assert made == ["MainThread"]  # once: compare took it as it was

    view = replay_view(
        log, ViewSpec(endpoint="churn", since=since, until=until, labelled=False, validation=0)
    )
    positions = view.positions.to_numpy() if view.positions is not None else None
    assert positions is not None
    assert not np.array_equal(positions, np.sort(positions))  # the view reorders the fold
    expected = in_turn(log, since, until)
    assert got.to_dict() == expected.to_dict()
    assert (got.metrics["rows"], got.metrics["labelled"]) == (600.0, 500.0)
    assert np.array_equal(got.candidate_scores, expected.candidate_scores)
    assert [t.rsplit("_", 1)[0] for t in threads] == ["eventml-replay"]  # scored on the worker
    assert done == [(600, 600)]


def test_naive_times_and_a_bad_segment_take_the_view_s_own_road(tmp_path: Path) -> None:
    log = shuffled_log(tmp_path)
    threads: list[str] = []

    def progress(n: int, total: int) -> None:
        threads.append(threading.current_thread().name)

    # DuckDB reads a time without a zone in its session's zone: the view decides the rows
    since = (BASE + timedelta(minutes=100)).replace(tzinfo=None)
    until = (BASE + timedelta(minutes=700)).replace(tzinfo=None)
    got = replay(log, "churn:1", "churn", since=since, until=until, progress=progress)
    assert got.to_dict() == in_turn(log, since, until).to_dict()
    assert set(threads) == {"MainThread"}
    # a --segment-by that names no feature is refused before anything is scored
    threads.clear()
    with pytest.raises(InputError) as exc:
        replay(log, "churn:1", "churn", segment_by="colour", progress=progress)
    assert str(exc.value).startswith("expected --segment-by one of the features ['tenure_months'")
    assert threads == []
