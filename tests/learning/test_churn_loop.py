"""The churn learning loop on the engine: v1 serves 20k, labels for 15k, v2 trained, replayed, promoted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from eventml.config import Settings
from eventml.errors import InputError
from eventml.events import RouteChanged
from eventml.learning.labels import append_labels
from eventml.learning.promote import promote
from eventml.learning.replay import replay
from eventml.learning.report import replay_html
from eventml.learning.train import TrainResult, train
from eventml.learning.views import View, ViewSpec, build_view
from eventml.log import Log, open_log
from eventml.models.registry import Registry
from eventml.serving.routes import deploy
from eventml.serving.spec import spec_of
from tests.learning.helpers import churn_records, predictions, record_labels, run_engine, send

BOOT, SERVED, LABELLED = 1_000, 20_000, 15_000


@dataclass
class Loop:
    log: Log
    view: View
    r1: TrainResult
    r2: TrainResult


@pytest.fixture(scope="module")
def loop() -> Loop:
    """Bootstrap v1 on 1k unserved records, then v1 serves 20k, 15k get labels, v2 trains."""
    log = open_log("memory://", Settings(batch_max=5000))
    boot, y_boot = churn_records(0, BOOT)
    send(log, boot)
    assert run_engine(log) == BOOT
    append_labels(log, record_labels([r.id for r in boot], y_boot))
    v0 = build_view(log, ViewSpec(endpoint="churn"))
    r1 = train(log, "churn", v0, "churn", algo="logreg",
               features=["tenure_months", "monthly_charges", "contract_years"])  # fmt: skip
    deploy(log, "churn", "churn:1")
    served, y = churn_records(BOOT, BOOT + SERVED)
    send(log, served)
    assert run_engine(log) == SERVED
    append_labels(log, record_labels([r.id for r in served[:LABELLED]], y[:LABELLED]))
    view = build_view(log, ViewSpec(endpoint="churn", model="churn:1"))
    r2 = train(log, "churn", view, "churn", algo="hgb")
    return Loop(log=log, view=view, r1=r1, r2=r2)


def routes(log: Log) -> list[RouteChanged]:
    return list(Registry.from_log(log).routes["churn"])


def test_v1_served_20k_and_the_view_holds_the_15k_labelled(loop: Loop) -> None:
    log, view = loop.log, loop.view
    preds = [p for p in predictions(log) if p.model == "churn"]
    assert len(preds) == SERVED
    assert {(p.status, p.version) for p in preds} == {("ok", 1)}
    assert view.rows == LABELLED
    assert view.split("train").num_rows == 12_000
    assert view.split("validation").num_rows == 3_000


def test_v2_lineage_names_view_parent_code_and_metrics(loop: Loop) -> None:
    r2, view = loop.r2, loop.view
    d = r2.pushed.descriptor
    assert (d.name, d.version, d.format, d.endpoint) == ("churn", 2, "onnx", "churn")
    assert msgspec.structs.asdict(d.lineage) == {
        "view": view.hash,
        "parent_version": 1,
        "code_version": "0.1.0",
        "source_path": None,
    }
    assert set(d.metrics) == {"rows_train", "rows_validation", "accuracy", "auc", "log_loss", "ece"}
    assert (d.metrics["rows_train"], d.metrics["rows_validation"]) == (12_000.0, 3_000.0)
    assert [s.name for s in d.inputs] == list(r2.trained.features)
    assert r2.trained.classes == ["0", "1"]


def test_replay_shows_v2_better_on_held_out_rows(loop: Loop) -> None:
    log, view = loop.log, loop.view
    cutoff = view.cutoff
    r = replay(log, "churn:2", "churn", since=cutoff)
    m = r.metrics
    # rows since the cutoff: 3,000 labelled held-out rows, then the 5,000 unlabelled ones
    assert (m["rows"], m["labelled"], m["compared"]) == (8_000.0, 3_000.0, 3_000.0)
    assert m["auc"] > m["served_auc"] + 0.01
    assert m["log_loss"] < m["served_log_loss"]
    assert 0.5 < m["agreement"] < 1.0
    assert m["psi"] > 0
    # the held-out metrics of train are the replay's metrics on the same rows
    d = loop.r2.pushed.descriptor
    assert m["auc"] == pytest.approx(d.metrics["auc"], abs=1e-12)
    assert [(s["by"], s["segment"], s["rows"], s["labelled"]) for s in r.segments] == [
        ("served", "churn:1", 8_000, 3_000)
    ]
    assert [b["rows"] for b in r.calibration["candidate"]]
    assert sum(b["rows"] for b in r.calibration["served"]) == 3_000
    page = replay_html(r)
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 2
    assert "<script" not in page


def test_promote_canary_then_champion_and_a_worse_model_is_refused(loop: Loop) -> None:
    log, view = loop.log, loop.view
    cutoff = view.cutoff
    gate = "auc >= served_auc + 0.005"
    canary = promote(log, "churn", "churn:2", as_="canary:10", require=gate, since=cutoff)
    assert (canary.route.version, canary.route.champion) == (2, "churn:1")
    assert canary.route.spec == {
        "champion": "churn:1", "split": {"churn:1": 90.0, "churn:2": 10.0}, "decider": "split",
    }  # fmt: skip
    assert canary.checks[0].startswith("auc >= served_auc + 0.005: ")
    assert canary.checks[0].endswith(" passed")
    champion = promote(log, "churn", "churn:2", as_="champion", require=gate, since=cutoff)
    assert (champion.route.version, champion.route.champion, champion.route.spec) == (
        3,
        "churn:2",
        {},
    )

    worse = train(log, "churn", view, "churn", algo="logreg", features=["age"])
    assert worse.pushed.descriptor.version == 3
    assert worse.parent_version == 2
    before = routes(log)
    with pytest.raises(InputError) as exc:
        promote(log, "churn", "churn:3", as_="champion", require="auc >= served_auc", since=cutoff)
    text = str(exc.value)
    assert text.startswith(
        "refused to promote churn:3 on 'churn': the replay gate 'auc >= served_auc' failed (auc >= served_auc: "
    )
    assert text.endswith(" FAILED)")
    assert routes(log) == before
    assert spec_of(before[-1]).champion == "churn:2"


def test_shadow_route_and_gate_over_unknown_metric(loop: Loop, tmp_path: Path) -> None:
    log = loop.log
    before = routes(log)
    with pytest.raises(InputError) as exc:
        promote(log, "churn", "churn:1", as_="shadow", require="rmse < 1")
    assert str(exc.value).startswith(
        "expected a replay metric, got 'rmse'; known: accuracy, agreement, auc,"
    )
    assert routes(log) == before
    p = promote(log, "churn", "churn:1", as_="shadow", require="agreement >= 0")
    assert p.route.spec["shadow"] == ["churn:1"]
    assert p.route.champion == spec_of(before[-1]).champion
