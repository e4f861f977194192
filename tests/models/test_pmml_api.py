"""The public surface of the PMML evaluator: metadata, result shapes, float32 fields, ties,
missing values, MiningField treatments and Targets, on small documents written here.

The expected labels and values were checked with JPMML-Evaluator 1.7.7
(``scripts/pmml_fixtures/JpmmlRunner.java``) on the same documents and rows."""

from __future__ import annotations

import numpy as np
import pytest

from eventml.models.formats._pmml import PmmlField, PmmlResult, load_pmml

HEAD = '<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">\n'


def pmml(dictionary: str, model: str) -> bytes:
    return (HEAD + f"<DataDictionary>{dictionary}</DataDictionary>\n{model}\n</PMML>").encode()


TREE = pmml(
    '<DataField name="x" optype="continuous" dataType="float"/>'
    '<DataField name="c" optype="categorical" dataType="string">'
    '<Value value="red"/><Value value="blue"/></DataField>'
    '<DataField name="y" optype="categorical" dataType="string">'
    '<Value value="no"/><Value value="yes"/><Value value="maybe"/></DataField>',
    '<TreeModel functionName="classification" splitCharacteristic="binarySplit">'
    '<MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/>'
    '<MiningField name="c"/></MiningSchema>'
    '<Node score="no"><True/><ScoreDistribution value="no" recordCount="1"/>'
    '<Node score="maybe"><SimplePredicate field="x" operator="lessOrEqual" value="0.1"/>'
    '<ScoreDistribution value="yes" recordCount="3"/>'
    '<ScoreDistribution value="maybe" recordCount="3"/></Node>'
    '<Node score="no"><SimplePredicate field="x" operator="greaterThan" value="0.1"/>'
    '<ScoreDistribution value="no" recordCount="4"/>'
    '<ScoreDistribution value="yes" recordCount="1"/></Node>'
    "</Node></TreeModel>",
)


def test_metadata() -> None:
    model = load_pmml(TREE, where="tree.pmml")
    assert model.inputs == (
        PmmlField("x", "continuous", "float", ()),
        PmmlField("c", "categorical", "string", ("red", "blue")),
    )
    assert model.target == "y"
    assert model.function == "classification"
    assert model.classes == ("no", "yes", "maybe")


def test_float_field_threshold_and_tie_take_the_leaf_score() -> None:
    model = load_pmml(TREE, where="tree.pmml")
    just_above = float(np.nextafter(np.float32(0.1), np.float32(1)))
    result = model.predict(
        {
            "x": np.array([0.1, 0.1000000001, just_above, np.nan]),
            "c": np.array(["red", "blue", None, "red"], dtype=object),
        }
    )
    assert isinstance(result, PmmlResult)
    assert result.value is None
    assert result.label is not None
    assert result.probabilities is not None
    # 0.1 and 0.1000000001 are the same float32 as the threshold: lessOrEqual holds
    assert result.label.tolist() == ["maybe", "maybe", "no", None]
    assert result.probabilities[:3].tolist() == [
        [0.0, 0.5, 0.5],  # "yes" and "maybe" tie, the leaf's score says "maybe"
        [0.0, 0.5, 0.5],
        [0.8, 0.2, 0.0],  # "maybe" is absent from the leaf: 0.0, not NaN
    ]
    assert np.isnan(result.probabilities[3]).all()  # missing input, no true child: no prediction


REGRESSION = pmml(
    '<DataField name="a" optype="continuous" dataType="double">'
    '<Interval closure="closedClosed" leftMargin="0" rightMargin="100"/></DataField>'
    '<DataField name="b" optype="continuous" dataType="integer"/>'
    '<DataField name="y" optype="continuous" dataType="double"/>',
    '<RegressionModel functionName="regression">'
    '<MiningSchema><MiningField name="y" usageType="target"/>'
    '<MiningField name="a" invalidValueTreatment="asMissing" missingValueReplacement="50"/>'
    '<MiningField name="b" outliers="asExtremeValues" lowValue="1" highValue="5"/></MiningSchema>'
    '<Targets><Target field="y" rescaleFactor="2" rescaleConstant="0.5" castInteger="floor"/>'
    "</Targets>"
    '<RegressionTable intercept="0.25"><NumericPredictor name="a" coefficient="0.1"/>'
    '<NumericPredictor name="b" coefficient="1" exponent="2"/></RegressionTable>'
    "</RegressionModel>",
)


def test_treatments_and_targets() -> None:
    model = load_pmml(REGRESSION, where="r.pmml")
    result = model.predict(
        {"a": np.array([10.0, 120.0, np.nan, 10.0]), "b": np.array([2, 3, 0, 9])}
    )
    assert result.value is not None
    assert result.value.dtype == np.float64
    # y = floor(2 * (0.25 + 0.1 a + b^2) + 0.5); a=120 is invalid -> missing -> 50; b clamps to 1..5
    assert result.value.tolist() == [11.0, 29.0, 13.0, 53.0]


def test_integer_field_refuses_fractions() -> None:
    model = load_pmml(REGRESSION, where="r.pmml")
    with pytest.raises(Exception, match=r"expected an integer for field 'b', got 2\.5 \(row 0\)"):
        model.predict({"a": np.array([1.0]), "b": np.array([2.5])})


def test_empty_batch() -> None:
    result = load_pmml(REGRESSION, where="r.pmml").predict(
        {"a": np.zeros(0), "b": np.zeros(0, dtype=np.int64)}
    )
    assert result.value is not None
    assert result.value.shape == (0,)


def random_tree(rng: np.random.Generator, operators: list[tuple[str, str]], depth: int) -> str:
    """A regression tree over x0..x2 with binary and multi-way (chained) splits."""
    if depth == 0 or rng.random() < 0.15:
        return ""
    parts = []
    ways = int(rng.integers(2, 5))
    for way in range(ways):
        field = f"x{rng.integers(0, 3)}"
        value = round(float(rng.normal()), 1)
        score = round(float(rng.normal()), 3)
        first, second = operators[int(rng.integers(0, len(operators)))]
        if way == ways - 1:
            predicate = "<True/>"
        else:
            predicate = f'<SimplePredicate field="{field}" operator="{first}" value="{value}"/>'
        parts.append(
            f'<Node score="{score}">{predicate}{random_tree(rng, operators, depth - 1)}</Node>'
        )
        if way == 0 and ways == 2 and rng.random() < 0.5:  # a complementary pair instead of True
            predicate = f'<SimplePredicate field="{field}" operator="{second}" value="{value}"/>'
            parts.append(f'<Node score="{score + 1}">{predicate}</Node>')
            break
    return "".join(parts)


@pytest.mark.parametrize(
    "operators",
    [
        [("lessOrEqual", "greaterThan")],
        [
            ("lessOrEqual", "greaterThan"),
            ("lessThan", "greaterOrEqual"),
            ("greaterThan", "lessOrEqual"),
        ],
    ],
    ids=["one-operator", "mixed-operators"],
)
def test_fast_walks_agree_with_the_general_walk(operators: list[tuple[str, str]]) -> None:
    """Complete rows take the one-comparison-per-level walks; a batch with a missing value takes
    the general three-valued walk. Both must pick the same leaves for the complete rows."""
    rng = np.random.default_rng(5)
    segments = "".join(
        f'<Segment id="{i}"><True/><TreeModel functionName="regression">'
        '<MiningSchema><MiningField name="x0"/><MiningField name="x1"/><MiningField name="x2"/>'
        f'</MiningSchema><Node score="0"><True/>{random_tree(rng, operators, 5)}</Node>'
        "</TreeModel></Segment>"
        for i in range(20)
    )
    fields = "".join(
        f'<DataField name="x{i}" optype="continuous" dataType="double"/>' for i in range(3)
    )
    document = pmml(
        fields + '<DataField name="y" optype="continuous" dataType="double"/>',
        '<MiningModel functionName="regression"><MiningSchema>'
        '<MiningField name="y" usageType="target"/><MiningField name="x0"/><MiningField name="x1"/>'
        '<MiningField name="x2"/></MiningSchema>'
        f'<Segmentation multipleModelMethod="sum">{segments}</Segmentation></MiningModel>',
    )
    model = load_pmml(document, where="random.pmml")
    columns = {f"x{i}": np.round(rng.normal(size=2000), 1) for i in range(3)}
    fast = model.predict(columns).value
    with_gap = {name: np.append(values, np.nan) for name, values in columns.items()}
    general = model.predict(with_gap).value
    assert fast is not None
    assert general is not None
    assert fast.tolist() == general[:-1].tolist()
