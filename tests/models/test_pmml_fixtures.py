"""Generated fixtures (``scripts/pmml_fixtures/``) score like JPMML-Evaluator 1.7.7 and sklearn.

* sklearn2pmml models (tree with ties, 50-tree forest, gradient boosting, HistGradientBoosting,
  LightGBM, logistic / linear / Poisson / Gamma regression, two MLPs, a pipeline with a scaler, a
  discretizer, one-hot encoding and missing-value replacement) are compared with both JPMML and
  the fitted model's own predict / predict_proba, within 1e-9. The tree models declare
  ``dataType="float"`` inputs (sklearn compares in float32) and we round inputs and thresholds to
  float32 like JPMML, so no looser tolerance is needed.
* Hand-written documents (GeneralRegressionModel with each link, TreeModel missing-value and
  no-true-child strategies, segmentation methods, a NeuralNetwork with NormContinuous inputs and
  output, transformations and built-in functions) are
  compared with JPMML on 80 rows with missing and out-of-range values; where JPMML refuses a row
  (``ERROR`` in the reference) we must refuse it too, with :class:`SchemaMismatch`.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from eventml.errors import SchemaMismatch
from eventml.models.formats._pmml import PmmlModel, load_pmml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pmml"
SKLEARN = (
    "tree_ties", "forest50", "gbc_multiclass", "hgb_binary", "logistic_multiclass", "linear",
    "poisson", "gamma", "mlp_logistic", "mlp_tanh", "pipeline_transforms", "lgbm_multiclass",
)  # fmt: skip
HANDWRITTEN_PREFIXES = (
    "glm_", "tree_none", "tree_null", "tree_last", "tree_default", "neural_", "mining_", "vote_",
    "transforms",
)  # fmt: skip
HANDWRITTEN = sorted(
    path.name.removesuffix(".pmml")
    for path in FIXTURES.glob("*.pmml")
    if path.name.startswith(HANDWRITTEN_PREFIXES)
)
Columns = dict[str, npt.NDArray[np.float64] | npt.NDArray[np.object_]]


def load(name: str) -> PmmlModel:
    plain, packed = FIXTURES / f"{name}.pmml", FIXTURES / f"{name}.pmml.gz"
    data = plain.read_bytes() if plain.exists() else gzip.decompress(packed.read_bytes())
    return load_pmml(data, where=f"{name}.pmml")


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def inputs(model: PmmlModel, path: Path) -> Columns:
    header, rows = read_csv(path)
    columns: Columns = {}
    for field in model.inputs:
        cells = [row[header.index(field.name)] for row in rows]
        if field.data_type == "string":
            columns[field.name] = np.array([c if c else None for c in cells], dtype=object)
        else:
            columns[field.name] = np.array([float(c) if c else np.nan for c in cells])
    return columns


def input_file(name: str) -> Path:
    if name == "pipeline_transforms":
        return FIXTURES / "inputs_pipeline.csv"
    if name in SKLEARN:
        return FIXTURES / "inputs_wine.csv"
    return FIXTURES / "inputs_synthetic.csv"


def subset(columns: Columns, rows: list[int]) -> Columns:
    return {name: values[rows] for name, values in columns.items()}


def check(model: PmmlModel, columns: Columns, header: list[str], rows: list[list[str]]) -> None:
    result = model.predict(columns)
    if model.function == "regression":
        assert result.value is not None
        assert result.label is None
        expected = np.array([float(r[1]) if r[1] else np.nan for r in rows])
        np.testing.assert_allclose(result.value, expected, rtol=0, atol=1e-9)
        return
    assert result.label is not None
    assert result.probabilities is not None
    assert result.label.tolist() == [r[1] or None for r in rows]
    order = [model.classes.index(h[2:-1]) for h in header[2:]]
    expected = np.array([[float(v) if v else np.nan for v in r[2:]] for r in rows])
    np.testing.assert_allclose(result.probabilities[:, order], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", SKLEARN)
@pytest.mark.parametrize("engine", ["reference/jpmml-1.7.7", "sklearn"])
def test_sklearn2pmml_models(name: str, engine: str) -> None:
    model = load(name)
    header, rows = read_csv(FIXTURES / f"{engine}_{name}.csv")
    assert len(rows) == 300
    check(model, inputs(model, input_file(name)), header, rows)


@pytest.mark.parametrize("name", HANDWRITTEN)
def test_handwritten_models_match_jpmml(name: str) -> None:
    model = load(name)
    columns = inputs(model, input_file(name))
    header, rows = read_csv(FIXTURES / "reference" / f"jpmml-1.7.7_{name}.csv")
    assert len(rows) == 80
    scored = [i for i, r in enumerate(rows) if not r[1].startswith("ERROR")]
    refused = [i for i, r in enumerate(rows) if r[1].startswith("ERROR")]
    check(model, subset(columns, scored), header, [rows[i] for i in scored])
    for i in refused:
        with pytest.raises(SchemaMismatch):
            model.predict(subset(columns, [i]))


def test_handwritten_fixtures_are_all_found() -> None:
    assert len(HANDWRITTEN) == 3 + 1 + 1 + 8 + 6 + 4


def test_fixtures_stay_small() -> None:
    total = sum(path.stat().st_size for path in FIXTURES.rglob("*") if path.is_file())
    assert total < 2_000_000


def test_refusal_names_a_refused_row() -> None:
    """A batch JPMML would refuse in some rows fails as a whole, naming one of those rows (the
    first one met by the function evaluated first) in the batch's own numbering."""
    model = load("transforms")
    _, rows = read_csv(FIXTURES / "reference" / "jpmml-1.7.7_transforms.csv")
    refused = {i for i, r in enumerate(rows) if r[1].startswith("ERROR")}
    with pytest.raises(SchemaMismatch) as info:
        model.predict(inputs(model, input_file("transforms")))
    assert info.value.row in refused
    assert str(info.value) == (
        f"function pow cannot take a missing value (row {info.value.row}) (transforms.pmml)"
    )
