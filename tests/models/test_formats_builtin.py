"""The conformance suite on the built-in ONNX, PMML and scikit-learn plugins."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression

from eventml import events as ev
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
