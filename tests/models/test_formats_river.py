"""The River plugin: conformance, the trust rule, bool labels through skops, learning."""

from __future__ import annotations

import collections
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from river import linear_model, preprocessing, tree
from river.utils import math as river_math
from sklearn.linear_model import LinearRegression

from eventml import events as ev
from eventml.errors import ModelRejected, SchemaMismatch
from eventml.models import formats
from eventml.models.formats._river import MANY_FROM, RiverModel, repair_bool_keys
from tests.models.conformance import FormatConformance, assert_outputs_close

FEATURES = ("a", "b", "c", "d")


def toy(n: int = 300, seed: int = 3) -> tuple[list[dict[str, ev.Feature]], list[bool], list[float]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    rows: list[dict[str, ev.Feature]] = [dict(zip(FEATURES, map(float, r), strict=True)) for r in x]
    labels = [bool(v) for v in x[:, 0] + x[:, 1] * x[:, 2] > 0]
    values = [float(v) for v in x @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0]
    return rows, labels, values


def trained(model: Any, targets: str = "labels", n: int = 300) -> Any:
    rows, labels, values = toy(n)
    for x, y in zip(rows, labels if targets == "labels" else values, strict=True):
        model.learn_one(x, y)
    return model


def lr_pipeline() -> Any:
    return trained(preprocessing.StandardScaler() | linear_model.LogisticRegression())


def linreg_pipeline() -> Any:
    return trained(preprocessing.StandardScaler() | linear_model.LinearRegression(), "values")


def reference(model: Any, rows: list[dict[str, ev.Feature]]) -> list[ev.Output]:
    outputs: list[ev.Output] = []
    for x in rows:
        p = model.predict_proba_one(x)
        outputs.append(
            {
                "label": str(model.predict_one(x)),
                "probabilities": {str(c): v for c, v in p.items()},
            }
        )
    return outputs


def descriptor(features: tuple[str, ...] = FEATURES) -> ev.ModelDescriptor:
    return ev.ModelDescriptor(
        name="m", version=1, digest="0", format="river", size=1, created_at=ev.now(),
        inputs=[ev.TensorSpec(name=f, dtype="double", shape=[-1]) for f in features],
    )  # fmt: skip


def load(payload: bytes, features: tuple[str, ...] = FEATURES) -> RiverModel:
    model = formats.get("river").load(payload, descriptor(features))
    assert isinstance(model, RiverModel)
    return model


class TestRiverFormat(FormatConformance):
    """A scaled logistic regression, the usual River pipeline, with bool labels."""

    format_name = "river"
    tolerance = 1e-12

    @pytest.fixture
    def artefact(self, tmp_path: Path) -> Path:
        path = tmp_path / "lr.river.skops"
        sio.dump(lr_pipeline(), path)
        return path

    @pytest.fixture
    def features(self) -> tuple[str, ...]:
        return FEATURES

    @pytest.fixture
    def rows(self) -> list[dict[str, ev.Feature]]:
        return toy(40, seed=9)[0]

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        return reference(lr_pipeline(), toy(40, seed=9)[0])


class TestRiverTreeFormat(TestRiverFormat):
    """A Hoeffding tree with bool labels, detected by content under a plain name."""

    @pytest.fixture
    def artefact(self, tmp_path: Path) -> Path:
        path = tmp_path / "tree.zip"
        sio.dump(trained(tree.HoeffdingTreeClassifier(grace_period=50), n=200), path)
        return path

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        model = trained(tree.HoeffdingTreeClassifier(grace_period=50), n=200)
        return reference(model, toy(40, seed=9)[0])


def test_bool_labels_keep_both_classes_through_skops() -> None:
    model = trained(tree.HoeffdingTreeClassifier(grace_period=50), n=200)
    payload = sio.dumps(model)
    repaired = repair_bool_keys(payload)
    assert repaired != payload
    untouched = sio.dumps(lr_pipeline())
    assert repair_bool_keys(untouched) is untouched
    loaded = load(payload)
    assert loaded.classes == ("False", "True")
    rows = toy(40, seed=9)[0]
    assert_outputs_close(loaded.predict_batch(rows), reference(model, rows), 0.0)


def test_regression_scores_the_value() -> None:
    model = linreg_pipeline()
    loaded = load(sio.dumps(model))
    rows = toy(20, seed=5)[0]
    assert loaded.kind == "regression"
    assert [s.name for s in loaded.outputs] == ["value"]
    want = [{"value": model.predict_one(x)} for x in rows]
    assert_outputs_close(loaded.predict_batch(rows), want, 0.0)


@pytest.mark.parametrize(
    ("make", "targets"),
    [
        (lr_pipeline, "labels"),
        (linreg_pipeline, "values"),
    ],
    ids=["classification", "regression"],
)  # fmt: skip
def test_long_batches_score_vectorized_like_one_by_one(make: Any, targets: str) -> None:
    model = make()
    loaded = load(sio.dumps(model))
    rows = toy(MANY_FROM + 10, seed=11)[0]
    if targets == "labels":
        want = reference(model, rows)
    else:
        want = [{"value": model.predict_one(x)} for x in rows]
    assert_outputs_close(loaded.predict_batch(rows), want, 1e-12)
    one_by_one = [out for row in rows for out in loaded.predict_batch([row])]
    assert_outputs_close(loaded.predict_batch(rows), one_by_one, 1e-12)


def test_null_features_are_left_out_like_river_expects() -> None:
    model = lr_pipeline()
    loaded = load(sio.dumps(model))
    row: dict[str, ev.Feature] = {"a": 0.5, "b": None, "c": -1.0, "d": 2.0}
    assert_outputs_close(
        loaded.predict_batch([row]), reference(model, [{"a": 0.5, "c": -1.0, "d": 2.0}]), 0.0
    )


def test_learning_changes_predictions_like_river() -> None:
    model = lr_pipeline()
    loaded = load(sio.dumps(model))
    rows = toy(30, seed=21)[0]
    before = loaded.predict_batch(rows)
    flipped = [not y for y in toy(30, seed=21)[1]]
    loaded.learn_many(rows, flipped)
    for x, y in zip(rows, flipped, strict=True):
        model.learn_one(x, y)
    after = loaded.predict_batch(rows)
    assert after != before
    assert_outputs_close(after, reference(model, rows), 0.0)
    loaded.learn_one({"A": 1.0, "B": 1.0, "C": 1.0, "D": 1.0}, True)
    model.learn_one({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, True)
    assert_outputs_close(loaded.predict_batch(rows), reference(model, rows), 0.0)
    with pytest.raises(SchemaMismatch, match="expected one target per row"):
        loaded.learn_many(rows, flipped[:3])


def test_new_classes_appear_with_zero_for_absent_ones() -> None:
    fresh = tree.HoeffdingTreeClassifier()
    loaded = load(sio.dumps(fresh))
    x: dict[str, ev.Feature] = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert loaded.predict_batch([x]) == [{"label": None, "probabilities": {}}]
    loaded.learn_one(x, "red")
    loaded.learn_one({"a": -1.0, "b": 0.0, "c": 0.0, "d": 0.0}, "white")
    assert loaded.classes == ("red", "white")
    (out,) = loaded.predict_batch([x])
    assert set(out["probabilities"]) == {"red", "white"}
    assert out["label"] == "red"


def test_feature_names_are_required() -> None:
    with pytest.raises(ModelRejected, match=r"feature names the River model learned \(--features"):
        load(sio.dumps(lr_pipeline()), features=())


class Gadget:
    """A class outside River: its file could make eventml run any code it names."""


def test_a_non_river_type_is_refused_with_the_types() -> None:
    payload = sio.dumps([Gadget(), collections.deque([1.0]), lr_pipeline()])
    want = "got ['collections.deque', 'tests.models.test_formats_river.Gadget']"
    with pytest.raises(ModelRejected, match=re.escape(want)):
        load(payload)


def test_a_model_that_is_not_river_is_refused() -> None:
    with pytest.raises(ModelRejected, match="expected a River classifier or regressor, got Linear"):
        load(sio.dumps(LinearRegression()))


def test_a_function_is_refused_even_from_river() -> None:
    payload = sio.dumps({"f": river_math.sigmoid})
    with pytest.raises(ModelRejected, match=r"got \['river\.utils\.math\.sigmoid'\]"):
        load(payload)


def test_detection_by_suffix_or_content(tmp_path: Path) -> None:
    plugin = formats.get("river")
    named = tmp_path / "m.river.skops"
    sio.dump(lr_pipeline(), named)
    other = tmp_path / "m.zip"
    sio.dump(LinearRegression(), other)
    plain = tmp_path / "m.skops"
    sio.dump(lr_pipeline(), plain)
    assert plugin.detect(named, named.read_bytes()[:4096])
    assert plugin.detect(plain, plain.read_bytes()[:4096])
    assert not plugin.detect(other, other.read_bytes()[:4096])
    assert not plugin.detect(tmp_path, b"")
    assert zipfile.is_zipfile(named)
