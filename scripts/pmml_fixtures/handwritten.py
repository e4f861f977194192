"""Dev-only: write the hand-made PMML fixtures and score them with JPMML (never run by CI).

sklearn2pmml cannot produce GeneralRegressionModel files, tree missing-value strategies or most
built-in functions, so these small documents are written here by hand, with an input CSV that has
missing and out-of-range values, and scored by JpmmlRunner.java into
``tests/fixtures/pmml/reference/jpmml-1.7.7_<name>.csv``::

    /tmp/pmmlgen/bin/python scripts/pmml_fixtures/handwritten.py
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("PMML_FIXTURES_OUT", ROOT / "tests" / "fixtures" / "pmml"))
CLASSPATH = Path(os.environ.get("JPMML_CLASSPATH_FILE", "/tmp/jpmml.cp"))  # noqa: S108 (dev tool)
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">\n'

DICTIONARY = """
  <DataDictionary>
    <DataField name="x1" optype="continuous" dataType="double"/>
    <DataField name="x2" optype="continuous" dataType="double">
      <Interval closure="closedClosed" leftMargin="-5" rightMargin="5"/>
    </DataField>
    <DataField name="n" optype="continuous" dataType="integer"/>
    <DataField name="color" optype="categorical" dataType="string">
      <Value value="red"/><Value value="green"/><Value value="blue"/>
      <Value value="?" property="missing"/>
    </DataField>
    <DataField name="grade" optype="ordinal" dataType="integer">
      <Value value="1"/><Value value="2"/><Value value="3"/>
    </DataField>
    <DataField name="y" optype="continuous" dataType="double"/>
    <DataField name="label" optype="categorical" dataType="string">
      <Value value="no"/><Value value="yes"/><Value value="maybe"/>
    </DataField>
  </DataDictionary>
"""


OUTPUT = """
    <Output>
      <OutputField name="p_no" optype="continuous" dataType="double" feature="probability" value="no"/>
      <OutputField name="p_yes" optype="continuous" dataType="double" feature="probability" value="yes"/>
    </Output>"""


def schema(target: str, *, treatments: bool = False) -> str:
    x2 = (
        '<MiningField name="x2" invalidValueTreatment="asMissing" missingValueReplacement="0.5"/>'
        if treatments
        else '<MiningField name="x2" invalidValueTreatment="asIs"/>'
    )
    x1 = (
        '<MiningField name="x1" outliers="asExtremeValues" lowValue="-2" highValue="2.5"/>'
        if treatments
        else '<MiningField name="x1"/>'
    )
    return f"""
    <MiningSchema>
      <MiningField name="{target}" usageType="target"/>
      {x1}
      {x2}
      <MiningField name="n"/>
      <MiningField name="color"/>
      <MiningField name="grade"/>
    </MiningSchema>"""


BINARY_DICTIONARY = DICTIONARY.replace('<Value value="maybe"/>', "")

GLM_LOGIT = f"""{HEAD}{BINARY_DICTIONARY}
  <GeneralRegressionModel modelType="generalizedLinear" functionName="classification"
      linkFunction="logit" distribution="binomial" targetReferenceCategory="no">
    {schema("label").replace('<MiningField name="grade"/>', "")}{OUTPUT}
    <ParameterList>
      <Parameter name="p0" label="intercept"/><Parameter name="p1"/><Parameter name="p2"/>
      <Parameter name="p3"/><Parameter name="p4"/><Parameter name="p5"/>
    </ParameterList>
    <FactorList><Predictor name="color"/></FactorList>
    <CovariateList><Predictor name="x1"/><Predictor name="x2"/></CovariateList>
    <PPMatrix>
      <PPCell value="red" predictorName="color" parameterName="p1"/>
      <PPCell value="green" predictorName="color" parameterName="p2"/>
      <PPCell value="1" predictorName="x1" parameterName="p3"/>
      <PPCell value="2" predictorName="x2" parameterName="p4"/>
      <PPCell value="red" predictorName="color" parameterName="p5"/>
      <PPCell value="1" predictorName="x1" parameterName="p5"/>
    </PPMatrix>
    <ParamMatrix>
      <PCell targetCategory="yes" parameterName="p0" beta="-0.3"/>
      <PCell targetCategory="yes" parameterName="p1" beta="0.8"/>
      <PCell targetCategory="yes" parameterName="p2" beta="-0.45"/>
      <PCell targetCategory="yes" parameterName="p3" beta="1.25"/>
      <PCell targetCategory="yes" parameterName="p4" beta="-0.07"/>
      <PCell targetCategory="yes" parameterName="p5" beta="0.6"/>
    </ParamMatrix>
  </GeneralRegressionModel>
</PMML>
"""

GLM_POISSON = f"""{HEAD}{DICTIONARY}
  <GeneralRegressionModel modelType="generalizedLinear" functionName="regression"
      linkFunction="log" distribution="poisson" offsetVariable="x2">
    {schema("y").replace('<MiningField name="x2" invalidValueTreatment="asIs"/>', '<MiningField name="x2" invalidValueTreatment="asIs" missingValueReplacement="0"/>')}
    <ParameterList>
      <Parameter name="p0"/><Parameter name="p1"/><Parameter name="p2"/>
      <Parameter name="p3"/><Parameter name="p4"/>
    </ParameterList>
    <FactorList><Predictor name="grade"/></FactorList>
    <CovariateList><Predictor name="x1"/><Predictor name="n"/></CovariateList>
    <PPMatrix>
      <PPCell value="2" predictorName="grade" parameterName="p1"/>
      <PPCell value="3" predictorName="grade" parameterName="p2"/>
      <PPCell value="1" predictorName="x1" parameterName="p3"/>
      <PPCell value="0.5" predictorName="n" parameterName="p4"/>
    </PPMatrix>
    <ParamMatrix>
      <PCell parameterName="p0" beta="0.2"/>
      <PCell parameterName="p1" beta="0.35"/>
      <PCell parameterName="p2" beta="-0.4"/>
      <PCell parameterName="p3" beta="0.15"/>
      <PCell parameterName="p4" beta="0.05"/>
    </ParamMatrix>
  </GeneralRegressionModel>
</PMML>
"""

GLM_MULTINOMIAL = f"""{HEAD}{DICTIONARY}
  <GeneralRegressionModel modelType="multinomialLogistic" functionName="classification"
      targetReferenceCategory="maybe">
    {schema("label")}{OUTPUT}
    <ParameterList><Parameter name="p0"/><Parameter name="p1"/><Parameter name="p2"/></ParameterList>
    <FactorList><Predictor name="color"/></FactorList>
    <CovariateList><Predictor name="x1"/></CovariateList>
    <PPMatrix>
      <PPCell value="blue" predictorName="color" parameterName="p1"/>
      <PPCell value="1" predictorName="x1" parameterName="p2"/>
    </PPMatrix>
    <ParamMatrix>
      <PCell targetCategory="no" parameterName="p0" beta="0.1"/>
      <PCell targetCategory="no" parameterName="p1" beta="-0.5"/>
      <PCell targetCategory="no" parameterName="p2" beta="0.9"/>
      <PCell targetCategory="yes" parameterName="p0" beta="-0.2"/>
      <PCell targetCategory="yes" parameterName="p1" beta="0.7"/>
      <PCell targetCategory="yes" parameterName="p2" beta="-0.3"/>
    </ParamMatrix>
  </GeneralRegressionModel>
</PMML>
"""

TRANSFORMS = (
    f"""{HEAD}{DICTIONARY}
  <TransformationDictionary>
    <DerivedField name="x1_norm" optype="continuous" dataType="double">
      <NormContinuous field="x1" mapMissingTo="0" outliers="asExtremeValues">
        <LinearNorm orig="-2" norm="0"/><LinearNorm orig="0" norm="0.4"/><LinearNorm orig="3" norm="1"/>
      </NormContinuous>
    </DerivedField>
    <DerivedField name="x2_bin" optype="categorical" dataType="string">
      <Discretize field="x2" mapMissingTo="none" defaultValue="out">
        <DiscretizeBin binValue="low"><Interval closure="closedOpen" leftMargin="-5" rightMargin="0"/></DiscretizeBin>
        <DiscretizeBin binValue="mid"><Interval closure="closedClosed" leftMargin="0" rightMargin="1"/></DiscretizeBin>
        <DiscretizeBin binValue="high"><Interval closure="openClosed" leftMargin="1" rightMargin="4"/></DiscretizeBin>
      </Discretize>
    </DerivedField>
    <DerivedField name="warmth" optype="continuous" dataType="double">
      <MapValues outputColumn="out" mapMissingTo="-1" defaultValue="0.25">
        <FieldColumnPair field="color" column="in"/>
        <InlineTable>
          <row><in>red</in><out>1.5</out></row>
          <row><in>green</in><out>0.5</out></row>
        </InlineTable>
      </MapValues>
    </DerivedField>
    <DerivedField name="math" optype="continuous" dataType="double">
      <Apply function="+">
        <Apply function="*"><Constant dataType="double">0.5</Constant><Apply function="pow"><FieldRef field="x1"/><Constant>2</Constant></Apply></Apply>
        <Apply function="-">
          <Apply function="exp"><Apply function="/"><FieldRef field="x2"/><Constant>4</Constant></Apply></Apply>
          <Apply function="ln"><Apply function="+"><Apply function="abs"><FieldRef field="x1"/></Apply><Constant>1</Constant></Apply></Apply>
        </Apply>
      </Apply>
    </DerivedField>
    <DerivedField name="more" optype="continuous" dataType="double">
      <Apply function="+">
        <Apply function="log10"><Apply function="sqrt"><Apply function="+"><Apply function="max"><FieldRef field="x2"/><Constant>0</Constant><FieldRef field="x1"/></Apply><Constant>1</Constant></Apply></Apply></Apply>
        <Apply function="+">
          <Apply function="min"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>
          <Apply function="threshold"><FieldRef field="x1"/><Constant>0.3</Constant></Apply>
        </Apply>
      </Apply>
    </DerivedField>
    <DerivedField name="rounding" optype="continuous" dataType="double">
      <Apply function="+">
        <Apply function="floor"><Apply function="*"><FieldRef field="x1"/><Constant>3</Constant></Apply></Apply>
        <Apply function="+">
          <Apply function="ceil"><FieldRef field="x2"/></Apply>
          <Apply function="round"><Apply function="*"><FieldRef field="x1"/><Constant>2</Constant></Apply></Apply>
        </Apply>
      </Apply>
    </DerivedField>
    <DerivedField name="logic" optype="continuous" dataType="double">
      <Apply function="if">
        <Apply function="and">
          <Apply function="greaterThan"><FieldRef field="x1"/><Constant>0</Constant></Apply>
          <Apply function="or">
            <Apply function="equal"><FieldRef field="color"/><Constant>red</Constant></Apply>
            <Apply function="not"><Apply function="lessOrEqual"><FieldRef field="x2"/><Constant>1</Constant></Apply></Apply>
          </Apply>
        </Apply>
        <Constant dataType="double">2</Constant>
        <Apply function="if">
          <Apply function="isMissing"><FieldRef field="color"/></Apply>
          <Constant dataType="double">-1</Constant>
          <Apply function="if">
            <Apply function="isIn"><FieldRef field="grade"/><Constant dataType="integer">1</Constant><Constant dataType="integer">3</Constant></Apply>
            <Constant dataType="double">0.5</Constant>
            <Constant dataType="double">0</Constant>
          </Apply>
        </Apply>
      </Apply>
    </DerivedField>
    <DerivedField name="filled" optype="continuous" dataType="double">
      <Apply function="+" mapMissingTo="7">
        <FieldRef field="n"/>
        <Apply function="if">
          <Apply function="lessThan"><FieldRef field="x2"/><Constant>2</Constant></Apply>
          <Constant>1</Constant><Constant>0</Constant>
        </Apply>
      </Apply>
    </DerivedField>
  </TransformationDictionary>
  <RegressionModel functionName="regression">
    {schema("y", treatments=True)}
    <LocalTransformations>
      <DerivedField name="n_scaled" optype="continuous" dataType="double">
        <Apply function="/"><FieldRef field="n"/><Constant>10</Constant></Apply>
      </DerivedField>
    </LocalTransformations>
    <Output>
"""
    + "".join(
        f'      <OutputField name="out_{name}" feature="transformedValue" dataType="{dt}">'
        f'<FieldRef field="{name}"/></OutputField>\n'
        for name, dt in [
            ("x1_norm", "double"),
            ("x2_bin", "string"),
            ("warmth", "double"),
            ("math", "double"),
            ("more", "double"),
            ("rounding", "double"),
            ("logic", "double"),
            ("filled", "double"),
            ("n_scaled", "double"),
        ]
    )
    + """    </Output>
    <Targets><Target field="y" rescaleFactor="2" rescaleConstant="-1"/></Targets>
    <RegressionTable intercept="0.1">
      <NumericPredictor name="x1_norm" coefficient="1.5"/>
      <NumericPredictor name="warmth" coefficient="0.75"/>
      <NumericPredictor name="math" coefficient="0.2"/>
      <NumericPredictor name="more" coefficient="-0.3"/>
      <NumericPredictor name="rounding" coefficient="0.01"/>
      <NumericPredictor name="logic" coefficient="0.6"/>
      <NumericPredictor name="filled" coefficient="0.02"/>
      <NumericPredictor name="n_scaled" exponent="2" coefficient="0.4"/>
      <CategoricalPredictor name="x2_bin" value="low" coefficient="-0.2"/>
      <CategoricalPredictor name="x2_bin" value="mid" coefficient="0.1"/>
      <CategoricalPredictor name="x2_bin" value="none" coefficient="0.9"/>
      <CategoricalPredictor name="x2_bin" value="out" coefficient="-0.9"/>
      <CategoricalPredictor name="grade" value="2" coefficient="0.33"/>
      <PredictorTerm coefficient="0.05"><FieldRef field="x1"/><FieldRef field="warmth"/></PredictorTerm>
    </RegressionTable>
  </RegressionModel>
</PMML>
"""
)

TREE = """{head}{dictionary}
  <TreeModel functionName="classification" missingValueStrategy="{strategy}"
      noTrueChildStrategy="{no_true}" splitCharacteristic="multiSplit">
    {schema}{output}
    <Node id="root" score="no" defaultChild="a">
      <True/>
      <ScoreDistribution value="no" recordCount="50"/><ScoreDistribution value="yes" recordCount="30"/>
      <ScoreDistribution value="maybe" recordCount="20"/>
      <Node id="a" score="yes" defaultChild="a2">
        <SimplePredicate field="x1" operator="lessOrEqual" value="0.5"/>
        <ScoreDistribution value="no" recordCount="10"/><ScoreDistribution value="yes" recordCount="20"/>
        <Node id="a1" score="maybe">
          <SimpleSetPredicate field="color" booleanOperator="isIn"><Array n="2" type="string">red "green"</Array></SimpleSetPredicate>
          <ScoreDistribution value="maybe" recordCount="3"/><ScoreDistribution value="yes" recordCount="3"/>
        </Node>
        <Node id="a2" score="no">
          <CompoundPredicate booleanOperator="and">
            <SimplePredicate field="x2" operator="greaterThan" value="-1"/>
            <SimpleSetPredicate field="grade" booleanOperator="isNotIn"><Array type="int">2</Array></SimpleSetPredicate>
          </CompoundPredicate>
          <ScoreDistribution value="no" recordCount="7"/><ScoreDistribution value="yes" recordCount="1"/>
        </Node>
        <Node id="a3" score="yes">
          <SimplePredicate field="n" operator="greaterOrEqual" value="5"/>
          <ScoreDistribution value="yes" recordCount="4"/>
        </Node>
      </Node>
      <Node id="b" score="maybe">
        <CompoundPredicate booleanOperator="surrogate">
          <SimplePredicate field="x2" operator="lessThan" value="2"/>
          <SimplePredicate field="n" operator="lessThan" value="3"/>
          <False/>
        </CompoundPredicate>
        <ScoreDistribution value="maybe" recordCount="9"/><ScoreDistribution value="no" recordCount="3"/>
      </Node>
      <Node id="c" score="no">
        <CompoundPredicate booleanOperator="or">
          <SimplePredicate field="color" operator="equal" value="blue"/>
          <SimplePredicate field="grade" operator="isMissing"/>
        </CompoundPredicate>
        <ScoreDistribution value="no" recordCount="2"/><ScoreDistribution value="maybe" recordCount="2"/>
      </Node>
    </Node>
  </TreeModel>
</PMML>
"""

MINING = f"""{HEAD}{DICTIONARY}
  <MiningModel functionName="regression">
    {schema("y")}
    <Segmentation multipleModelMethod="{{method}}">
      <Segment id="1" weight="2">
        <SimplePredicate field="x1" operator="greaterThan" value="-1"/>
        <TreeModel functionName="regression" missingValueStrategy="lastPrediction">
          <MiningSchema>
            <MiningField name="y" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/>
          </MiningSchema>
          <Node score="1.5"><True/>
            <Node score="0.5"><SimplePredicate field="x2" operator="lessThan" value="0"/></Node>
            <Node score="2.5"><SimplePredicate field="x2" operator="greaterOrEqual" value="0"/></Node>
          </Node>
        </TreeModel>
      </Segment>
      <Segment id="2" weight="0.5">
        <True/>
        <RegressionModel functionName="regression">
          <MiningSchema>
            <MiningField name="y" usageType="target"/><MiningField name="x1"/><MiningField name="n"/>
          </MiningSchema>
          <RegressionTable intercept="0.25"><NumericPredictor name="n" coefficient="0.125"/></RegressionTable>
        </RegressionModel>
      </Segment>
      <Segment id="3" weight="1">
        <SimplePredicate field="color" operator="notEqual" value="green"/>
        <TreeModel functionName="regression" noTrueChildStrategy="returnLastPrediction">
          <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x1"/></MiningSchema>
          <Node score="-1"><True/>
            <Node score="3"><SimplePredicate field="x1" operator="greaterThan" value="1"/></Node>
          </Node>
        </TreeModel>
      </Segment>
    </Segmentation>
  </MiningModel>
</PMML>
"""

VOTE = (
    f"""{HEAD}{DICTIONARY}
  <MiningModel functionName="classification">
    {schema("label")}{OUTPUT}
    <Segmentation multipleModelMethod="{{method}}">
"""
    + "".join(
        f"""      <Segment id="{i}" weight="{w}">
        <True/>
        <TreeModel functionName="classification">
          <MiningSchema><MiningField name="x1"/><MiningField name="x2"/></MiningSchema>
          <Node score="{root}"><True/>
            <ScoreDistribution value="{root}" recordCount="1"/>
            <Node score="{a}"><SimplePredicate field="x1" operator="lessOrEqual" value="{t}"/>
              <ScoreDistribution value="{a}" recordCount="2"/><ScoreDistribution value="{b}" recordCount="2"/>
            </Node>
            <Node score="{b}"><SimplePredicate field="x2" operator="greaterThan" value="{t}"/>
              <ScoreDistribution value="{b}" recordCount="3"/><ScoreDistribution value="{a}" recordCount="1"/>
            </Node>
          </Node>
        </TreeModel>
      </Segment>
"""
        for i, (w, root, a, b, t) in enumerate(
            [
                (1, "no", "yes", "maybe", "0"),
                (2, "maybe", "no", "yes", "0.5"),
                (1, "yes", "maybe", "no", "-0.5"),
                (0.5, "no", "no", "maybe", "1"),
            ],
            start=1,
        )
    )
    + """    </Segmentation>
  </MiningModel>
</PMML>
"""
)


NEURAL = f"""{HEAD}{DICTIONARY}
  <NeuralNetwork functionName="regression" activationFunction="tanh">
    {schema("y")}
    <NeuralInputs>
      <NeuralInput id="i1"><DerivedField optype="continuous" dataType="double">
        <NormContinuous field="x1"><LinearNorm orig="-3" norm="-1"/><LinearNorm orig="0" norm="0"/><LinearNorm orig="3" norm="2"/></NormContinuous>
      </DerivedField></NeuralInput>
      <NeuralInput id="i2"><DerivedField optype="continuous" dataType="double">
        <NormContinuous field="x2" outliers="asExtremeValues"><LinearNorm orig="-4" norm="0"/><LinearNorm orig="5" norm="1"/></NormContinuous>
      </DerivedField></NeuralInput>
      <NeuralInput id="i3"><DerivedField optype="continuous" dataType="double">
        <NormDiscrete field="color" value="red"/>
      </DerivedField></NeuralInput>
    </NeuralInputs>
    <NeuralLayer>
      <Neuron id="h1" bias="0.1"><Con from="i1" weight="0.8"/><Con from="i2" weight="-0.5"/><Con from="i3" weight="0.3"/></Neuron>
      <Neuron id="h2" bias="-0.2"><Con from="i1" weight="-0.4"/><Con from="i2" weight="0.9"/></Neuron>
      <Neuron id="h3" bias="0.05"><Con from="i2" weight="0.7"/><Con from="i3" weight="-1.1"/></Neuron>
    </NeuralLayer>
    <NeuralLayer activationFunction="rectifier">
      <Neuron id="r1" bias="0.2"><Con from="h1" weight="1.2"/><Con from="h2" weight="-0.7"/><Con from="h3" weight="0.4"/></Neuron>
      <Neuron id="r2" bias="-0.1"><Con from="h1" weight="-0.6"/><Con from="h3" weight="1.5"/></Neuron>
    </NeuralLayer>
    <NeuralLayer activationFunction="identity">
      <Neuron id="o1" bias="0.3"><Con from="r1" weight="0.9"/><Con from="r2" weight="-0.8"/></Neuron>
    </NeuralLayer>
    <NeuralOutputs>
      <NeuralOutput outputNeuron="o1"><DerivedField optype="continuous" dataType="double">
        <NormContinuous field="y"><LinearNorm orig="10" norm="0"/><LinearNorm orig="30" norm="1"/></NormContinuous>
      </DerivedField></NeuralOutput>
    </NeuralOutputs>
  </NeuralNetwork>
</PMML>
"""


def inputs(path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 80
    x1 = np.round(rng.normal(0.3, 1.4, n), 2)
    x2 = np.round(rng.normal(0.5, 2.0, n), 1)
    x2[:6] = [-1, 0, 1, 2, 4, 7.5]  # bin edges and one value outside the valid interval
    x1[6:10] = [0.5, -2, 3, 1]  # split thresholds and NormContinuous knots
    counts = rng.integers(0, 9, n).astype(object)
    colors = rng.choice(["red", "green", "blue", "?"], n).astype(object)
    grades = rng.integers(1, 4, n).astype(object)
    rows = []
    for i in range(n):
        row = [x1[i], x2[i], counts[i], colors[i], grades[i]]
        if i % 9 == 3:
            row[0] = ""
        if i % 11 == 5:
            row[1] = ""
        if i % 13 == 7:
            row[2] = ""
        if i % 7 == 2:
            row[3] = ""
        if i % 17 == 8:
            row[4] = ""
        rows.append(row)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x1", "x2", "n", "color", "grade"])
        writer.writerows(rows)


def jpmml(name: str, source: Path) -> None:
    runner = Path(__file__).with_name("JpmmlRunner.java")
    out = subprocess.run(
        ["java", "-cp", CLASSPATH.read_text().strip(), str(runner), str(OUT / f"{name}.pmml"),
         str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (OUT / "reference" / f"jpmml-1.7.7_{name}.csv").write_text(out.stdout)


def main() -> None:
    source = OUT / "inputs_synthetic.csv"
    inputs(source)
    documents = {
        "glm_logit": GLM_LOGIT,
        "glm_poisson_log": GLM_POISSON,
        "glm_multinomial": GLM_MULTINOMIAL,
        "transforms": TRANSFORMS,
        "neural_regression": NEURAL,
    }
    for strategy in ("none", "nullPrediction", "lastPrediction", "defaultChild"):
        for no_true in ("returnNullPrediction", "returnLastPrediction"):
            documents[f"tree_{strategy}_{no_true}"] = TREE.format(
                head=HEAD, dictionary=DICTIONARY, strategy=strategy, no_true=no_true,
                schema=schema("label"), output=OUTPUT,
            )  # fmt: skip
    for method in ("sum", "average", "weightedAverage", "median", "selectFirst", "weightedSum"):
        documents[f"mining_{method}"] = MINING.replace("{method}", method)
    for method in ("majorityVote", "weightedMajorityVote", "average", "weightedAverage"):
        documents[f"vote_{method}"] = VOTE.replace("{method}", method)
    for name, text in documents.items():
        (OUT / f"{name}.pmml").write_text(text)
        jpmml(name, source)
        print(name)


if __name__ == "__main__":
    main()
