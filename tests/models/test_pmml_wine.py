"""The seven JPMML-SparkML wine models score all 1,599 rows like JPMML-Evaluator 1.7.7.

The LinearRegression and DecisionTreeRegression references ship with the data set
(``/work/shared/data/wine/reference``); the other five were produced with JPMML-Evaluator 1.7.7 by
``scripts/pmml_fixtures/JpmmlRunner.java`` and live in ``tests/fixtures/pmml/reference``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from eventml.models.formats._pmml import PmmlModel, load_pmml

# ../shared beside the repository, as in CI; missing data fails loudly, never skips
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "wine"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pmml" / "reference"
FEATURES = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
)  # fmt: skip


def wine_columns() -> dict[str, npt.NDArray[np.float64]]:
    table = np.loadtxt(DATA / "winequality_red.csv", delimiter=";")
    assert table.shape == (1599, 12)
    return {name: table[:, j].copy() for j, name in enumerate(FEATURES)}


def model(name: str) -> PmmlModel:
    path = DATA / "models" / f"{name}.pmml"
    return load_pmml(path.read_bytes(), where=path.name)


def reference(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    return rows[0], rows[1:]


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("winequalityLinearRegression", "shared"),
        ("winequalityDesisionTreeRegression", "shared"),
        ("winequalityGeneralizedLinearRegressionGaussian", "fixtures"),
        ("winequalityGeneralizedLinearRegressionGamma", "fixtures"),
    ],
)
def test_regression_models_match_jpmml(name: str, where: str) -> None:
    folder = DATA / "reference" if where == "shared" else FIXTURES
    _, rows = reference(folder / f"jpmml-1.7.7_{name}.csv")
    result = model(name).predict(wine_columns())
    assert result.value is not None
    assert result.label is None
    assert result.probabilities is None
    expected = np.array([float(r[1]) for r in rows])
    assert result.value.dtype == np.float64
    assert result.value.shape == (1599,)
    np.testing.assert_allclose(result.value, expected, rtol=0, atol=1e-9)


def test_tree_regression_is_exact_on_thresholds() -> None:
    """873 rows sit exactly on a split threshold; ``lessOrEqual`` must hold in float64."""
    _, rows = reference(DATA / "reference" / "jpmml-1.7.7_winequalityDesisionTreeRegression.csv")
    result = model("winequalityDesisionTreeRegression").predict(wine_columns())
    assert result.value is not None
    assert result.value.tolist() == [float(r[1]) for r in rows]
    assert result.value[0] == 5.073059360730594


def test_linear_regression_known_values() -> None:
    linear = model("winequalityLinearRegression")
    columns = wine_columns()
    assert linear.predict(columns).value is not None
    assert linear.predict(columns).value[0] == pytest.approx(5.178126058334128, abs=1e-12)  # type: ignore[index]
    zeros = {field.name: np.zeros(1) for field in linear.inputs}
    assert linear.predict(zeros).value == pytest.approx([3.282519468977813], abs=1e-15)


@pytest.mark.parametrize(
    "name",
    [
        "winequalityDecisionTreeClassification",
        "winequalityRandonForrestClassification",
        "winequalityMultilayerPerceptron",
    ],
)
def test_classification_models_match_jpmml(name: str) -> None:
    header, rows = reference(FIXTURES / f"jpmml-1.7.7_{name}.csv")
    scored = model(name)
    result = scored.predict(wine_columns())
    assert result.label is not None
    assert result.probabilities is not None
    assert result.value is None
    assert scored.classes == ("5", "6", "7", "4", "8", "3")  # DataDictionary order
    assert result.label.tolist() == [r[1] for r in rows]
    order = [scored.classes.index(h[2:-1]) for h in header[2:]]
    expected = np.array([[float(v) for v in r[2:]] for r in rows])
    assert not np.isnan(result.probabilities).any()
    np.testing.assert_allclose(result.probabilities[:, order], expected, rtol=0, atol=1e-9)


def test_tree_ties_take_the_leaf_score() -> None:
    """137 rows end in leaves where two classes tie; the answer is the leaf's score attribute."""
    name = "winequalityDecisionTreeClassification"
    _, rows = reference(FIXTURES / f"jpmml-1.7.7_{name}.csv")
    result = model(name).predict(wine_columns())
    assert result.probabilities is not None
    assert result.label is not None
    ordered = np.sort(result.probabilities, axis=1)
    tied = np.flatnonzero(ordered[:, -1] == ordered[:, -2])
    assert len(tied) == 137
    assert [result.label[i] for i in tied] == [rows[i][1] for i in tied]


def test_absent_classes_are_zero() -> None:
    result = model("winequalityDecisionTreeClassification").predict(wine_columns())
    assert result.probabilities is not None
    assert (result.probabilities == 0.0).any()
    assert not np.isnan(result.probabilities).any()
