"""Bad PMML is refused at load time and bad input at predict time, with exact messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eventml.errors import ModelRejected, SchemaMismatch, UnsupportedModel
from eventml.models.formats._pmml import load_pmml

# ../shared beside the repository, as in CI; missing data fails loudly, never skips
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "wine"
HEAD = '<PMML xmlns="http://www.dmg.org/PMML-4_3" version="4.3">\n'
DICTIONARY = (
    "<DataDictionary>\n"
    '<DataField name="x" optype="continuous" dataType="double">'
    '<Interval closure="closedClosed" leftMargin="0" rightMargin="10"/></DataField>\n'
    '<DataField name="c" optype="categorical" dataType="string">'
    '<Value value="a"/><Value value="b"/></DataField>\n'
    "</DataDictionary>\n"
)
REGRESSION = (
    '<RegressionModel functionName="regression">'
    '<MiningSchema><MiningField name="x"/><MiningField name="c"/></MiningSchema>'
    '<RegressionTable intercept="1"><NumericPredictor name="x" coefficient="2"/>'
    '<CategoricalPredictor name="c" value="a" coefficient="3"/></RegressionTable>'
    "</RegressionModel>\n"
)


def document(body: str = REGRESSION, transformations: str = "") -> bytes:
    return (HEAD + DICTIONARY + transformations + body + "</PMML>").encode()


def rejected(data: bytes) -> ModelRejected:
    with pytest.raises(ModelRejected) as info:
        load_pmml(data, where="bad.pmml")
    return info.value


def test_corrupt_bytes() -> None:
    error = rejected(b"\x00\x01garbage")
    assert type(error) is ModelRejected
    assert str(error) == (
        "expected a well-formed PMML document, got not well-formed (invalid token) "
        "(line 1, column 0) "
        "(bad.pmml)"
    )
    assert error.where == "bad.pmml"


def test_truncated_xml() -> None:
    data = document()
    error = rejected(data[: data.index(b"<RegressionTable")])
    assert str(error) == (
        "expected a well-formed PMML document, got no element found (line 6, column 118) (bad.pmml)"
    )


def test_empty_bytes() -> None:
    assert str(rejected(b"")) == (
        "expected a well-formed PMML document, got no element found (line 1, column 0) (bad.pmml)"
    )


def test_tensorflow_graph_is_not_pmml() -> None:
    data = (DATA / "models" / "optimized_WineQuality.pb").read_bytes()
    with pytest.raises(ModelRejected) as info:
        load_pmml(data, where="optimized_WineQuality.pb")
    assert type(info.value) is ModelRejected
    assert str(info.value) == (
        "expected a well-formed PMML document, got syntax error (line 2, column 0) "
        "(optimized_WineQuality.pb)"
    )


def test_other_xml_is_not_pmml() -> None:
    assert str(rejected(b"<html><body/></html>")) == (
        "expected a <PMML> root element, got <html> (bad.pmml)"
    )


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<PMML version="4.3">&lol3;</PMML>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<PMML version="4.3"><Header>&e;</Header></PMML>
"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["laughs", "external"])
def test_doctype_and_entities_are_refused(data: bytes) -> None:
    error = rejected(data)
    assert type(error) is ModelRejected
    assert str(error) == (
        "expected a PMML document without a DOCTYPE (PMML never needs one; refused for safety), "
        "got a DOCTYPE declaration (bad.pmml)"
    )


def test_unsupported_model_element_with_line() -> None:
    data = document('<SupportVectorMachineModel functionName="regression"/>\n')
    with pytest.raises(UnsupportedModel) as info:
        load_pmml(data, where="svm.pmml")
    assert (
        str(info.value) == "unsupported PMML element SupportVectorMachineModel (line 6) (svm.pmml)"
    )
    assert info.value.where == "svm.pmml"


def test_unsupported_function_with_line() -> None:
    derived = (
        "<TransformationDictionary>\n"
        '<DerivedField name="d" optype="continuous" dataType="double">\n'
        '<Apply function="weirdFunc"><FieldRef field="x"/></Apply>\n'
        "</DerivedField>\n</TransformationDictionary>\n"
    )
    with pytest.raises(UnsupportedModel) as info:
        load_pmml(document(transformations=derived), where="f.pmml")
    assert str(info.value) == (
        'unsupported PMML element Apply function="weirdFunc" (line 8) (f.pmml)'
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            REGRESSION.replace(
                'functionName="regression">',
                'functionName="regression" normalizationMethod="tanh">',
            ),
            'unsupported PMML element RegressionModel normalizationMethod="tanh" (line 6)',
        ),
        (
            REGRESSION.replace('name="x" coefficient', 'name="x" coefficient').replace(
                "<RegressionTable",
                '<Targets><Target field="y"><TargetValue value="1" '
                'priorProbability="0.5"/></Target></Targets><RegressionTable',
            ),
            "unsupported PMML element TargetValue (line 6)",
        ),
        (
            '<TreeModel functionName="regression" missingValueStrategy="aggregateNodes">'
            '<MiningSchema><MiningField name="x"/></MiningSchema><Node score="1"><True/></Node>'
            "</TreeModel>\n",
            'unsupported PMML element TreeModel missingValueStrategy="aggregateNodes" (line 6)',
        ),
        (
            '<TreeModel functionName="regression"><MiningSchema><MiningField name="x"/>'
            '</MiningSchema><Node score="1"><True/><Node score="2">'
            '<SimplePredicate field="x" operator="between" value="1"/></Node></Node>'
            "</TreeModel>\n",
            'unsupported PMML element SimplePredicate operator="between" (line 6)',
        ),
        (
            REGRESSION.replace(
                '<MiningField name="x"/>', '<MiningField name="x" missingValueTreatment="asPrior"/>'
            ),
            'unsupported PMML element MiningField missingValueTreatment="asPrior" (line 6)',
        ),
    ],
    ids=["normalization", "target-prior", "aggregate-nodes", "operator", "missing-treatment"],
)
def test_unsupported_attribute_values(body: str, message: str) -> None:
    with pytest.raises(UnsupportedModel) as info:
        load_pmml(document(body), where="m.pmml")
    assert str(info.value) == f"{message} (m.pmml)"


def test_undefined_field_is_rejected() -> None:
    body = REGRESSION.replace('<NumericPredictor name="x"', '<NumericPredictor name="nope"')
    assert str(rejected(document(body))) == (
        "PMML element NumericPredictor (line 6) refers to the undefined field 'nope' (bad.pmml)"
    )


@pytest.fixture
def model_columns() -> dict[str, np.ndarray]:
    return {"x": np.array([1.0, 2.0]), "c": np.array(["a", "b"], dtype=object)}


def test_predict_scores(model_columns: dict[str, np.ndarray]) -> None:
    result = load_pmml(document(), where="m.pmml").predict(model_columns)
    assert result.value is not None
    assert result.value.tolist() == [6.0, 5.0]


def test_missing_column(model_columns: dict[str, np.ndarray]) -> None:
    del model_columns["c"]
    with pytest.raises(SchemaMismatch) as info:
        load_pmml(document(), where="m.pmml").predict(model_columns)
    assert str(info.value) == "expected a column for PMML field 'c', got ['x'] (m.pmml)"


def test_length_mismatch(model_columns: dict[str, np.ndarray]) -> None:
    model_columns["c"] = np.array(["a"], dtype=object)
    with pytest.raises(SchemaMismatch) as info:
        load_pmml(document(), where="m.pmml").predict(model_columns)
    assert str(info.value) == "expected 2 rows for field 'c', got \"1 rows\" (m.pmml)"


def test_text_for_a_number(model_columns: dict[str, np.ndarray]) -> None:
    model_columns["x"] = np.array(["1.5", "abc"], dtype=object)
    with pytest.raises(SchemaMismatch) as info:
        load_pmml(document(), where="m.pmml").predict(model_columns)
    assert str(info.value) == "expected a number for field 'x', got \"abc\" (row 1) (m.pmml)"
    assert info.value.row == 1


def test_invalid_value_is_refused_by_default(model_columns: dict[str, np.ndarray]) -> None:
    model_columns["x"] = np.array([1.0, 11.0])
    with pytest.raises(SchemaMismatch) as info:
        load_pmml(document(), where="m.pmml").predict(model_columns)
    assert str(info.value) == "expected a valid value for field 'x', got 11.0 (row 1) (m.pmml)"


def test_unknown_category_is_refused(model_columns: dict[str, np.ndarray]) -> None:
    model_columns["c"] = np.array(["a", "z"], dtype=object)
    with pytest.raises(SchemaMismatch) as info:
        load_pmml(document(), where="m.pmml").predict(model_columns)
    assert str(info.value) == "expected a valid value for field 'c', got \"z\" (row 1) (m.pmml)"


def test_numbers_for_a_string_field(model_columns: dict[str, np.ndarray]) -> None:
    model_columns["c"] = np.array([1.0, 2.0])
    with pytest.raises(SchemaMismatch) as info:
        load_pmml(document(), where="m.pmml").predict(model_columns)
    assert str(info.value) == (
        "expected an object array of strings for field 'c', got \"float64 array\" (m.pmml)"
    )


def test_missing_numeric_input_gives_a_missing_result(model_columns: dict[str, np.ndarray]) -> None:
    model_columns["x"] = np.array([np.nan, 2.0])
    model_columns["c"] = np.array([None, "a"], dtype=object)
    result = load_pmml(document(), where="m.pmml").predict(model_columns)
    assert result.value is not None
    assert np.isnan(result.value[0])
    assert result.value[1] == 8.0
