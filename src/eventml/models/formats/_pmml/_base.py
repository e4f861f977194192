"""What every model element shares: the compile context, predictions, Targets and Output.

Model elements register a compiler by tag with :func:`register`; :func:`compile_model` looks
the tag up (an unknown tag is refused with :class:`UnsupportedModel`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from eventml.errors import ModelRejected

from ._expressions import Expr, find_expression, local_transformations
from ._fields import (
    DataField,
    Env,
    FieldInfo,
    MiningField,
    Scope,
    check_data_type,
    parse_mining_schema,
)
from ._values import Column, FloatArray, ObjectArray, cast_column, missing_column
from ._xml import Element, missing_attribute, unsupported

FUNCTIONS = frozenset({"regression", "classification"})


@dataclass
class Prediction:
    """One model's result for every row of a batch (NaN / None rows = missing result)."""

    n: int
    value: FloatArray | None = None
    classes: tuple[str, ...] = ()
    probabilities: FloatArray | None = None
    labels: ObjectArray | None = None

    @staticmethod
    def from_probabilities(
        classes: tuple[str, ...], probabilities: FloatArray, labels: ObjectArray | None = None
    ) -> Prediction:
        """A classification result; without ``labels`` the first most probable class wins."""
        n = probabilities.shape[0]
        if labels is None:
            labels = np.empty(n, dtype=object)
            known = ~np.isnan(probabilities).any(axis=1) if len(classes) else np.zeros(n, bool)
            if len(classes):
                best = np.argmax(np.where(np.isnan(probabilities), -np.inf, probabilities), axis=1)
                labels[known] = np.array(classes, dtype=object)[best[known]]
        return Prediction(n, None, classes, probabilities, labels)


@dataclass
class Context:
    """Load-time context handed to every model compiler."""

    data_fields: Mapping[str, DataField]
    scope: Scope
    where: str
    nested: bool = False


@dataclass(frozen=True)
class Target:
    """``Targets/Target``: the regression post-processing JPMML applies."""

    rescale_factor: float = 1.0
    rescale_constant: float = 0.0
    low: float = -np.inf
    high: float = np.inf
    cast_integer: str | None = None

    def apply(self, value: FloatArray) -> FloatArray:
        value = np.clip(value, self.low, self.high)
        if self.rescale_factor != 1.0:
            value = value * self.rescale_factor
        if self.rescale_constant != 0.0:
            value = value + self.rescale_constant
        if self.cast_integer == "round":
            value = np.floor(value + 0.5)
        elif self.cast_integer == "ceiling":
            value = np.ceil(value)
        elif self.cast_integer == "floor":
            value = np.floor(value)
        return np.asarray(value)


def parse_targets(model: Element, *, where: str) -> Target | None:
    targets = model.find("Targets")
    if targets is None:
        return None
    items = targets.findall("Target")
    if len(items) > 1:
        raise unsupported(items[1], where=where, detail="(more than one Target)")
    if not items:
        return None
    item = items[0]
    for child in item.elements():
        if child.tag != "TargetValue" or set(child.attrib) - {"value", "displayValue"}:
            raise unsupported(child, where=where)
    cast = item.get("castInteger")
    if cast not in (None, "round", "ceiling", "floor"):
        raise unsupported(item, where=where, detail=f'castInteger="{cast}"')
    try:
        return Target(
            float(item.get("rescaleFactor", "1") or "1"),
            float(item.get("rescaleConstant", "0") or "0"),
            float(item.get("min", "-inf") or "-inf"),
            float(item.get("max", "inf") or "inf"),
            cast,
        )
    except ValueError:
        raise ModelRejected(
            f"Target (line {item.line}) has an attribute that is not a number", where=where
        ) from None


OUTPUT_FEATURES = frozenset(
    {"predictedValue", "predictedDisplayValue", "probability", "transformedValue"}
)


@dataclass(frozen=True)
class OutputField:
    name: str
    feature: str
    data_type: str
    value: str | None
    expr: Expr | None


def parse_output(model: Element, scope: Scope, *, where: str) -> list[OutputField]:
    """Compile the Output element; later fields may use earlier ones (so they enter ``scope``)."""
    output = model.find("Output")
    if output is None:
        return []
    fields = []
    for child in output.elements():
        if child.tag != "OutputField":
            raise unsupported(child, where=where)
        name = child.get("name")
        if name is None:
            raise missing_attribute(child, "name", where=where)
        feature = child.get("feature", "predictedValue") or "predictedValue"
        if feature not in OUTPUT_FEATURES:
            raise unsupported(child, where=where, detail=f'feature="{feature}"')
        if child.get("segmentId") is not None:
            raise unsupported(child, where=where, detail="with segmentId")
        default = "string" if feature == "predictedDisplayValue" else "double"
        data_type = check_data_type(child, where=where, default=default)
        expr = find_expression(child, scope, where=where) if feature == "transformedValue" else None
        fields.append(OutputField(name, feature, data_type, child.get("value"), expr))
        scope.fields[name] = FieldInfo(data_type, child.get("optype", "continuous") or "")
    return fields


def evaluate_outputs(
    fields: list[OutputField], prediction: Prediction, env: Env
) -> dict[str, Column]:
    """Compute Output fields into ``env`` (a chain needs them) and return them."""
    out: dict[str, Column] = {}
    for spec in fields:
        if spec.feature == "transformedValue" and spec.expr is not None:
            column = spec.expr.evaluate(env)
        elif spec.feature == "probability":
            column = _probability(prediction, spec.value, env)
        elif prediction.value is not None:
            column = Column(prediction.value, "double")
        elif prediction.labels is not None:
            column = Column(prediction.labels, "string")
        else:
            column = missing_column(spec.data_type, env.n)
        column = cast_column(column, spec.data_type)
        env.values[spec.name] = column
        out[spec.name] = column
    return out


def _probability(prediction: Prediction, value: str | None, env: Env) -> Column:
    if prediction.probabilities is None:
        raise ModelRejected("an Output probability needs a classification model", where=env.where)
    if value is None:
        labels = prediction.labels if prediction.labels is not None else np.full(env.n, None)
        index = {label: i for i, label in enumerate(prediction.classes)}
        out = np.full(env.n, np.nan)
        for row, label in enumerate(labels):
            if label is not None:
                out[row] = prediction.probabilities[row, index[label]]
        return Column(out, "double")
    if value not in prediction.classes:
        return Column(np.zeros(env.n), "double")
    return Column(prediction.probabilities[:, prediction.classes.index(value)].copy(), "double")


class Core:
    """The model-specific part: turns an :class:`Env` into a :class:`Prediction`."""

    function: str
    classes: tuple[str, ...]

    def predict(self, env: Env) -> Prediction:
        raise NotImplementedError


Compiler = Callable[[Element, "ModelInfo", Context], Core]
_REGISTRY: dict[str, Compiler] = {}


def register(tag: str) -> Callable[[Compiler], Compiler]:
    """Register the compiler for one model element tag (a duplicate tag is a bug)."""

    def add(compiler: Compiler) -> Compiler:
        if tag in _REGISTRY:
            raise RuntimeError(f"PMML model element {tag} registered twice")
        _REGISTRY[tag] = compiler
        return compiler

    return add


MODEL_TAGS = frozenset(
    {"AnomalyDetectionModel", "AssociationModel", "BayesianNetworkModel", "BaselineModel",
     "ClusteringModel", "GaussianProcessModel", "GeneralRegressionModel", "MiningModel",
     "NaiveBayesModel", "NearestNeighborModel", "NeuralNetwork", "RegressionModel",
     "RuleSetModel", "SequenceModel", "Scorecard", "SupportVectorMachineModel", "TextModel",
     "TimeSeriesModel", "TreeModel"}
)  # fmt: skip


COMMON_CHILDREN = frozenset(
    {"MiningSchema", "Output", "ModelStats", "ModelExplanation", "Targets",
     "LocalTransformations", "ModelVerification"}
)  # fmt: skip
MODEL_CHILDREN = {  # anything else inside a model element is refused, never ignored
    "RegressionModel": frozenset({"RegressionTable"}),
    "TreeModel": frozenset({"Node"}),
    "MiningModel": frozenset({"Segmentation"}),
    "NeuralNetwork": frozenset({"NeuralInputs", "NeuralLayer", "NeuralOutputs"}),
    "GeneralRegressionModel": frozenset(
        {"ParameterList", "FactorList", "CovariateList", "PPMatrix", "PCovMatrix", "ParamMatrix"}
    ),
}


@dataclass
class ModelInfo:
    """What the common wrapper learned about a model before its compiler runs."""

    function: str
    target: str | None
    classes: tuple[str, ...]
    mining: list[MiningField]
    scope: Scope


@dataclass
class Model:
    """A compiled model element: schema, local transformations, core, Targets and Output."""

    core: Core
    info: ModelInfo
    lazy: Mapping[str, Expr]
    target: Target | None
    outputs: list[OutputField] = field(default_factory=list)

    @property
    def function(self) -> str:
        return self.info.function

    @property
    def classes(self) -> tuple[str, ...]:
        return self.core.classes

    def evaluate(self, parent: Env) -> tuple[Prediction, Env]:
        env = parent.child(self.lazy)
        prediction = self.core.predict(env)
        if self.target is not None and prediction.value is not None:
            prediction.value = self.target.apply(prediction.value)
        return prediction, env


def compile_model(element: Element, context: Context) -> Model:
    """Compile any supported model element (nested ones included)."""
    if element.tag not in _REGISTRY:
        raise unsupported(element, where=context.where)
    where = context.where
    if element.get("isScorable", "true") == "false":
        raise unsupported(element, where=where, detail='isScorable="false"')
    math = element.get("mathContext", "double")
    if math != "double":  # float arithmetic (XGBoost) would need float32 sums throughout
        raise unsupported(element, where=where, detail=f'mathContext="{math}"')
    function = element.get("functionName", "")
    if function not in FUNCTIONS:
        raise unsupported(element, where=where, detail=f'functionName="{function}"')
    schema = element.find("MiningSchema")
    if schema is None:
        raise missing_attribute(element, "MiningSchema", where=where)
    scope = context.scope.child()

    def types(name: str, at: Element) -> str:
        if name in context.data_fields:
            return context.data_fields[name].data_type
        return scope.lookup(name, at, where=where).data_type

    mining = parse_mining_schema(schema, types, where=where)
    for spec in mining:
        if context.nested and not spec.plain and spec.usage == "active":
            raise unsupported(schema, where=where, detail=f"treatment of nested field {spec.name}")
    targets = [m.name for m in mining if m.usage in ("target", "predicted")]
    target = targets[0] if targets else None
    classes: tuple[str, ...] = ()
    if target is not None and target in context.data_fields:
        classes = context.data_fields[target].labels if function == "classification" else ()
    info = ModelInfo(function, target, classes, mining, scope)
    allowed = COMMON_CHILDREN | MODEL_CHILDREN.get(element.tag, frozenset())
    for child in element.elements():
        if child.tag not in allowed:
            raise unsupported(child, where=where)
    lazy = local_transformations(element, scope, where=where)
    nested_context = Context(context.data_fields, scope, where, True)
    core = _REGISTRY[element.tag](element, info, nested_context)
    model_target = parse_targets(element, where=where)
    outputs = parse_output(element, scope.child(), where=where)
    return Model(core, info, lazy, model_target, outputs)


def find_model(parent: Element, *, where: str) -> Element:
    """The single model element inside PMML or a Segment."""
    for child in parent.elements():
        if child.tag in MODEL_TAGS:
            return child
    raise ModelRejected(f"no model element found in {parent.tag} (line {parent.line})", where=where)


def canonical(label: str, classes: tuple[str, ...] | list[str]) -> str:
    """The model's own spelling of a class label ("3" for a NormDiscrete value "3.0")."""
    if label in classes:
        return label
    try:
        number = float(label)
    except ValueError:
        return label
    for known in classes:
        try:
            if float(known) == number:
                return known
        except ValueError:
            continue
    return label
