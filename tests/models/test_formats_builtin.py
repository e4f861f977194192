"""The conformance suite on the built-in ONNX, PMML and scikit-learn plugins."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import skops.io as sio
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression

from eventml import events as ev
from eventml.errors import SchemaMismatch
from eventml.models import formats
from eventml.models._rows import EncodedRows, FloatMaps
from eventml.models.base import ClassOutputs, FeatureMatrix, label_outputs, normalize
from tests.models.conformance import FormatConformance

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
WINE_FEATURES = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
)  # fmt: skip


def wine_rows(n: int | None = None) -> list[dict[str, ev.Feature]]:
    lines = (WINE / "winequality_red.csv").read_text().split("\n")[:n]
    return [
        dict(zip(WINE_FEATURES, map(float, line.split(";")[:11]), strict=True)) for line in lines
    ]


def jpmml_reference(name: str) -> list[float]:
    with (WINE / "reference" / f"jpmml-1.7.7_{name}.csv").open() as f:
        return [float(r["prediction"]) for r in csv.DictReader(f)]


def toy_classification() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
    return x, y


class TestPmmlFormat(FormatConformance):
    format_name = "pmml"
    tolerance = 1e-9

    @pytest.fixture
    def artefact(self) -> Path:
        return WINE / "models" / "winequalityLinearRegression.pmml"

    @pytest.fixture
    def features(self) -> tuple[str, ...]:
        return ()

    @pytest.fixture
    def rows(self) -> list[dict[str, ev.Feature]]:
        return wine_rows()

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        return [{"value": v} for v in jpmml_reference("winequalityLinearRegression")]


class TestOnnxFormat(FormatConformance):
    format_name = "onnx"

    @pytest.fixture
    def artefact(self, tmp_path: Path) -> Path:
        x, y = toy_classification()
        model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
        path = tmp_path / "hgb.onnx"
        onx = to_onnx(model, x[:1], options={"zipmap": False}, target_opset=17)
        path.write_bytes(onx.SerializeToString())
        return path

    @pytest.fixture
    def features(self) -> tuple[str, ...]:
        return ("a", "b", "c", "d")

    @pytest.fixture
    def rows(self) -> list[dict[str, ev.Feature]]:
        x, _ = toy_classification()
        return [dict(zip("abcd", map(float, r), strict=True)) for r in x[:50]]

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        x, y = toy_classification()
        model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
        probs = model.predict_proba(x[:50])
        return [
            {"label": str(np.argmax(p)), "probabilities": {"0": float(p[0]), "1": float(p[1])}}
            for p in probs
        ]


class TestSklearnFormat(FormatConformance):
    format_name = "sklearn"
    tolerance = 1e-12

    @pytest.fixture
    def artefact(self, tmp_path: Path) -> Path:
        x, y = toy_classification()
        path = tmp_path / "lr.skops"
        sio.dump(LinearRegression().fit(x.astype(np.float64), y), path)
        return path

    @pytest.fixture
    def features(self) -> tuple[str, ...]:
        return ("a", "b", "c", "d")

    @pytest.fixture
    def rows(self) -> list[dict[str, ev.Feature]]:
        x, _ = toy_classification()
        return [dict(zip("abcd", map(float, r), strict=True)) for r in x[:20]]

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        x, y = toy_classification()
        pred = LinearRegression().fit(x.astype(np.float64), y).predict(x[:20].astype(np.float64))
        return [{"value": float(v)} for v in pred]


# The batch fast paths (FloatMaps for EncodedRows and lists of dicts, itemgetter rows) must
# read exactly what the row-by-row loop reads: a tuple of rows always takes that loop.

NAMES = ("alpha", "Beta Value", "gamma")


def exact(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape, memory order and bytes: NaN payloads and the sign of zero included.

    The order matters too: BLAS sums a row in another order for another layout.
    """
    same = (a.dtype, a.shape, a.strides) == (b.dtype, b.shape, b.strides)
    return same and a.tobytes() == b.tobytes()


def float_rows(n: int, seed: int = 0) -> list[dict[str, ev.Feature]]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, 4)) * 1e3
    return [{"beta_value": b, "extra": e, "ALPHA": a, "gamma": g} for a, b, g, e in values.tolist()]


def encoded(rows: Sequence[Mapping[str, ev.Feature]]) -> EncodedRows:
    return EncodedRows([msgspec.msgpack.encode(r) for r in rows])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_paths_read_exactly_like_the_row_loop(dtype: Any) -> None:
    rows = float_rows(200)
    rows[3]["gamma"] = float("nan")
    rows[4]["ALPHA"], rows[5]["beta_value"] = -0.0, float("-inf")
    matrix = FeatureMatrix(NAMES, "m")
    slow = matrix.matrix(tuple(rows), dtype)
    assert exact(matrix.matrix(rows, dtype), slow)
    assert exact(matrix.matrix(encoded(rows), dtype), slow)
    assert slow[:2].tolist() == [
        [np.asarray(r[k], dtype).item() for k in ("ALPHA", "beta_value", "gamma")] for r in rows[:2]
    ]


def test_layout_changes_between_and_within_batches() -> None:
    matrix = FeatureMatrix(NAMES, "m")
    a = float_rows(40, seed=1)
    b = [{"gamma": r["gamma"], "Alpha": r["ALPHA"], "beta value": r["beta_value"]} for r in a]
    for batch in (a, b, a, a[:20] + b[20:], b, b[:7]):  # b[:7]: too few rows for a fast path
        slow = matrix.matrix(tuple(batch))
        assert exact(matrix.matrix(batch), slow)
        assert exact(matrix.matrix(encoded(batch)), slow)


@pytest.mark.parametrize(
    "value", [None, 3, True, "2.5", " 7 ", "nan", 2**62 + 1, float("nan")], ids=repr
)
def test_values_that_are_not_plain_floats_read_like_the_row_loop(value: ev.Feature) -> None:
    matrix = FeatureMatrix(NAMES, "m")
    rows = float_rows(30)
    rows[17]["beta_value"] = value
    slow = matrix.matrix(tuple(rows))
    assert exact(matrix.matrix(rows), slow)
    assert exact(matrix.matrix(encoded(rows)), slow)


def test_int_valued_batches_take_the_gather_and_match() -> None:
    matrix = FeatureMatrix(NAMES, "m")
    rows: list[dict[str, ev.Feature]] = [
        {"alpha": i, "beta_value": -i, "gamma": i * 0.5, "id": f"r{i}"} for i in range(50)
    ]
    assert exact(matrix.matrix(rows), matrix.matrix(tuple(rows)))
    assert matrix.matrix(rows)[3].tolist() == [3.0, -3.0, 1.5]


@pytest.mark.parametrize("make", [list, encoded], ids=["dicts", "encoded"])
def test_a_missing_feature_is_the_same_error_on_every_path(make: Any) -> None:
    matrix = FeatureMatrix(NAMES, "m")
    rows = float_rows(40)
    del rows[25]["gamma"]
    with pytest.raises(SchemaMismatch) as slow:
        matrix.matrix(tuple(rows))
    with pytest.raises(SchemaMismatch) as fast:
        matrix.matrix(make(rows))
    assert (fast.value.message, fast.value.where, fast.value.row) == (
        slow.value.message, slow.value.where, slow.value.row,
    )  # fmt: skip
    assert fast.value.row == 25
    assert fast.value.message == (
        "expected features ['gamma'] for model 'm', got fields ['ALPHA', 'beta_value', 'extra']"
    )


@pytest.mark.parametrize("make", [list, encoded], ids=["dicts", "encoded"])
def test_a_value_that_is_not_a_number_is_the_same_error_on_every_path(make: Any) -> None:
    matrix = FeatureMatrix(NAMES, "m")
    rows = float_rows(40)
    rows[31]["ALPHA"] = "abc"
    with pytest.raises(SchemaMismatch) as fast:
        matrix.matrix(make(rows))
    assert (fast.value.message, fast.value.row) == (
        "expected a number for feature 'alpha', got \"abc\"", 31,
    )  # fmt: skip


def test_fields_that_normalize_alike_keep_the_last_one_on_every_path() -> None:
    matrix = FeatureMatrix(NAMES, "m")
    rows: list[dict[str, ev.Feature]] = [
        {"alpha": float(i), "beta_value": 1.0, "gamma": 2.0, "ALPHA": -float(i)} for i in range(30)
    ]
    rows[9] = {"ALPHA": 5.0, "beta_value": 1.0, "gamma": 2.0, "alpha": 6.0}  # other order
    slow = matrix.matrix(tuple(rows))
    assert slow[:2, 0].tolist() == [-0.0, -1.0]
    assert slow[9, 0] == 6.0
    assert exact(matrix.matrix(rows), slow)
    assert exact(matrix.matrix(encoded(rows)), slow)


def test_a_dict_subclass_is_read_through_its_own_methods() -> None:
    class Doubled(dict[str, ev.Feature]):
        def __getitem__(self, key: str) -> ev.Feature:
            value = super().__getitem__(key)
            return value * 2 if isinstance(value, float) else value

    matrix = FeatureMatrix(NAMES, "m")
    rows = [Doubled(r) for r in float_rows(30)]
    got = matrix.matrix(rows)
    assert exact(got, matrix.matrix(tuple(rows)))
    assert got[0, 0] == rows[0]["ALPHA"]  # doubled, like the row loop reads it


def test_encoded_rows_read_as_one_stream_of_maps() -> None:
    rows = float_rows(20)
    raws = [msgspec.msgpack.encode(r) for r in rows]
    assert exact(FloatMaps(["gamma", "alpha"], key=normalize).of_raws(raws),
                 np.array([[r["gamma"], r["ALPHA"]] for r in rows]))  # fmt: skip
    assert FloatMaps(["missing"]).of_raws(raws) is None
    assert FloatMaps(["a"]).of_raws([msgspec.msgpack.encode({"a": 1})]) is None  # an int


def test_onnx_outputs_are_the_same_for_dicts_encoded_rows_and_the_row_loop(
    tmp_path: Path,
) -> None:
    x, y = toy_classification()
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    onx = to_onnx(hgb, x[:1], options={"zipmap": False}, target_opset=17)
    descriptor = ev.ModelDescriptor(
        name="m", version=1, digest="-", format="onnx", size=0, created_at=ev.now(),
        inputs=[ev.TensorSpec(name=n, dtype="tensor(float)", shape=[]) for n in "abcd"],
    )  # fmt: skip
    model = formats.get("onnx").load(onx.SerializeToString(), descriptor)
    rows = [dict(zip("dcba", map(float, r[::-1]), strict=True)) for r in x[:120]]
    slow = model.predict_batch(tuple(rows))
    for got in (model.predict_batch(rows), model.predict_batch(encoded(rows))):
        assert list(got) == list(slow)
        assert [got[i] for i in range(len(got))] == list(slow)
    want = hgb.predict_proba(x[:120])
    assert [o["label"] for o in slow] == [str(int(np.argmax(p))) for p in want]
    assert all(type(o["label"]) is str for o in slow)
    assert max(abs(o["probabilities"]["1"] - p[1]) for o, p in zip(slow, want, strict=True)) < 1e-6


def test_class_outputs_turn_labels_into_strings_when_read() -> None:
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]])
    given = label_outputs(["0", "1"], probabilities, np.array([1, 0, 0]))
    assert isinstance(given, ClassOutputs)
    assert given.labels == ["1", "0", "0"]
    assert given[0] == {"label": "1", "probabilities": {"0": 0.25, "1": 0.75}}
    argmax = label_outputs(["no", "yes"], probabilities)
    assert argmax.labels == ["yes", "no", "no"]
    assert len(argmax) == 3
    assert list(argmax) == [argmax[i] for i in range(3)]
    strings = label_outputs(["a", "b"], probabilities[:2], np.array(["b", "a"], dtype=object))
    assert strings.labels == ["b", "a"]
