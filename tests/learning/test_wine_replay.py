"""Replay of the wine decision tree over predictions served by the linear regression (PMML).

The expected figures are computed here straight from the JPMML reference outputs and the
``quality`` column; the replay must give the same numbers.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError
from eventml.ingest import SendOptions, send_file
from eventml.learning import metrics
from eventml.learning.labels import append_labels
from eventml.learning.promote import promote
from eventml.learning.replay import replay
from eventml.log import Log, open_log
from eventml.models.registry import Registry, push_model
from eventml.serving.routes import deploy
from tests.learning.helpers import predictions, run_engine

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
LR = WINE / "models" / "winequalityLinearRegression.pmml"
TREE = WINE / "models" / "winequalityDesisionTreeRegression.pmml"


def reference(name: str) -> np.ndarray:
    with (WINE / "reference" / f"jpmml-1.7.7_{name}.csv").open() as f:
        return np.array([float(r["prediction"]) for r in csv.DictReader(f)])


def quality() -> np.ndarray:
    with (WINE / "winequality_red.csv").open() as f:
        return np.array([float(row[-1]) for row in csv.reader(f, delimiter=";") if row])


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Log:
    log = open_log(str(tmp_path_factory.mktemp("wine")), Settings(batch_max=500))
    push_model(log, LR, "wine-lr", endpoint="wine")
    push_model(log, TREE, "wine-tree", endpoint="wine")
    deploy(log, "wine", "wine-lr")
    opts = SendOptions(endpoint="wine", sep=";", exclude=frozenset({"quality"}))
    send_file(log, WINE / "winequality_red_names.csv", opts)
    assert run_engine(log) == 1599
    preds = sorted(predictions(log), key=lambda p: p.source.offset if p.source else -1)
    labels = [
        ev.Label(record_id=p.record_id, value=int(q), ts=p.ts)
        for p, q in zip(preds, quality(), strict=True)
    ]
    append_labels(log, labels)
    return log


def test_replay_metrics_equal_those_of_the_reference_outputs(wine: Log) -> None:
    y = quality()
    tree, lr = (
        reference("winequalityDesisionTreeRegression"),
        reference("winequalityLinearRegression"),
    )
    r = replay(wine, "wine-tree:1", "wine")
    assert (r.kind, r.positive) == ("regression", None)
    expected = {
        "rmse": float(np.sqrt(np.mean((tree - y) ** 2))),
        "mae": float(np.mean(np.abs(tree - y))),
        "served_rmse": float(np.sqrt(np.mean((lr - y) ** 2))),
        "served_mae": float(np.mean(np.abs(lr - y))),
        "agreement": float(np.mean(np.abs(tree - lr) <= 0.5)),
        "psi": metrics.psi(lr, tree),
        "rows": 1599.0,
        "labelled": 1599.0,
        "compared": 1599.0,
    }
    assert set(r.metrics) == set(expected)
    for name, want in expected.items():
        assert r.metrics[name] == pytest.approx(want, rel=1e-9, abs=1e-12), name
    assert [(s["by"], s["segment"], s["rows"], s["labelled"]) for s in r.segments] == [
        ("served", "wine-lr:1", 1599, 1599)
    ]
    assert r.segments[0]["rmse"] == pytest.approx(expected["rmse"], rel=1e-9)


def test_segments_by_feature_quartiles(wine: Log) -> None:
    r = replay(wine, "wine-tree:1", "wine", segment_by="alcohol")
    quartiles = [s for s in r.segments if s["by"] == "alcohol"]
    assert [s["segment"] for s in quartiles] == [
        "[-inf, 9.5)",
        "[9.5, 10.2)",
        "[10.2, 11.1)",
        "[11.1, inf)",
    ]
    assert sum(s["rows"] for s in quartiles) == 1599
    with pytest.raises(InputError) as exc:
        replay(wine, "wine-tree:1", "wine", segment_by="colour")
    assert str(exc.value).startswith("expected --segment-by one of the features ['fixed acidity', ")


def test_regression_gate_and_a_candidate_whose_inputs_do_not_match(
    wine: Log, tmp_path: Path
) -> None:
    from eventml.learning.views import ViewSpec, build_view

    before = list(Registry.from_log(wine).routes["wine"])
    with pytest.raises(InputError) as exc:
        promote(wine, "wine", "wine-tree:1", require="rmse <= served_rmse - 0.2")
    assert str(exc.value).startswith(
        "refused to promote wine-tree:1 on 'wine': the replay gate 'rmse <= served_rmse - 0.2' failed"
    )
    # a model trained on the churn features cannot score wine events
    from eventml.learning.train import fit

    churn_log = open_log("memory://", Settings())
    from tests.learning.helpers import record_labels, write_predictions

    preds = write_predictions(churn_log, 200)
    append_labels(
        churn_log, record_labels([p.record_id for p in preds], [i % 2 for i in range(200)])
    )
    trained = fit(build_view(churn_log, ViewSpec(endpoint="churn")), "logreg")
    path = tmp_path / "churn.onnx"
    path.write_bytes(trained.onnx)
    push_model(wine, path, "churn-on-wine")
    with pytest.raises(InputError) as exc:
        promote(wine, "wine", "churn-on-wine:1", require="rmse < 1")
    assert str(exc.value).startswith(
        "expected the events to carry features ['tenure_months', 'monthly_charges', "
    )
    assert "that model churn-on-wine:1 reads, got features ['alcohol', 'chlorides', " in str(
        exc.value
    )
    assert list(Registry.from_log(wine).routes["wine"]) == before


def test_replay_from_the_stored_fold_equals_one_folded_afresh(wine: Log) -> None:
    first = replay(wine, "wine-tree:1", "wine", segment_by="alcohol")  # stores the fold
    db: Path = getattr(wine, "path")  # noqa: B009 - the embedded log's file
    folder = db.with_name(db.name + ".views")
    assert sorted(p.name for p in folder.iterdir())[0] == "labels.arrow"
    warm = replay(wine, "wine-tree:1", "wine", segment_by="alcohol")
    shutil.rmtree(folder)
    cold = replay(wine, "wine-tree:1", "wine", segment_by="alcohol")
    assert warm.to_dict() == cold.to_dict() == first.to_dict()
    assert np.array_equal(warm.candidate_scores, cold.candidate_scores)
