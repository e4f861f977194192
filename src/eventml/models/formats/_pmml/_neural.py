"""NeuralNetwork: NeuralInputs (DerivedField expressions), fully vectorized layers (one matrix
product each), per-layer activation / normalization, and NeuralOutputs (NormDiscrete for
classes, FieldRef or NormContinuous for a regression target). A missing input makes the row
missing, as in JPMML.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eventml.errors import ModelRejected, SchemaMismatch

from ._base import Context, Core, ModelInfo, Prediction, canonical, register
from ._expressions import Expr, FieldRef, NormContinuous, NormDiscrete, denormalize, find_expression
from ._fields import Env
from ._values import FloatArray, cast_column
from ._xml import Element, missing_attribute, unsupported


def _activate(name: str, z: FloatArray, threshold: float, altitude: float) -> FloatArray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if name == "logistic":
            return np.asarray(1.0 / (1.0 + np.exp(-z)))
        if name == "tanh":
            return np.asarray(np.tanh(z))
        if name == "identity":
            return z
        if name == "rectifier":
            return np.asarray(np.maximum(z, 0.0))
        if name == "exponential":
            return np.asarray(np.exp(z))
        if name == "reciprocal":
            return np.asarray(1.0 / z)
        if name == "square":
            return np.asarray(z * z)
        if name == "Gauss":
            return np.asarray(np.exp(-(z * z)))
        if name == "sine":
            return np.asarray(np.sin(z))
        if name == "cosine":
            return np.asarray(np.cos(z))
        if name == "Elliott":
            return np.asarray(z / (1.0 + np.abs(z)))
        if name == "arctan":
            return np.asarray(2.0 * np.arctan(z) / np.pi)
        if name == "threshold":
            return np.asarray((z > threshold).astype(np.float64))
    raise AssertionError(name)  # pragma: no cover - names are checked at load


ACTIVATIONS = frozenset(
    {"logistic", "tanh", "identity", "rectifier", "exponential", "reciprocal", "square", "Gauss",
     "sine", "cosine", "Elliott", "arctan", "threshold"}
)  # fmt: skip


@dataclass(frozen=True)
class Layer:
    weights: FloatArray  # [inputs, neurons]
    bias: FloatArray
    activation: str
    normalization: str
    threshold: float
    altitude: float

    def forward(self, x: FloatArray) -> FloatArray:
        y = _activate(self.activation, x @ self.weights + self.bias, self.threshold, self.altitude)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.normalization == "softmax":
                e = np.exp(y - y.max(axis=1, keepdims=True))
                return np.asarray(e / e.sum(axis=1, keepdims=True))
            if self.normalization == "simplemax":
                return np.asarray(y / y.sum(axis=1, keepdims=True))
        return y


class NeuralCore(Core):
    def __init__(self, element: Element, info: ModelInfo, where: str) -> None:
        self.function = info.function
        self.where = where
        inputs = element.find("NeuralInputs")
        if inputs is None:
            raise missing_attribute(element, "NeuralInputs", where=where)
        ids: dict[str, int] = {}
        self.inputs: list[Expr] = []
        for neuron in inputs.findall("NeuralInput"):
            derived = neuron.find("DerivedField")
            if derived is None:
                raise missing_attribute(neuron, "DerivedField", where=where)
            ids[neuron.get("id", "") or ""] = len(self.inputs)
            self.inputs.append(find_expression(derived, info.scope, where=where))
        self.layers = []
        for layer in element.findall("NeuralLayer"):
            self.layers.append(self._layer(element, layer, ids, where))
            ids = {n.get("id", "") or "": j for j, n in enumerate(layer.findall("Neuron"))}
        if not self.layers:
            raise missing_attribute(element, "NeuralLayer", where=where)
        self._outputs(element, info, ids, where)

    def _layer(self, model: Element, layer: Element, ids: dict[str, int], where: str) -> Layer:
        activation = layer.get("activationFunction") or model.get("activationFunction", "")
        if activation not in ACTIVATIONS:
            raise unsupported(layer, where=where, detail=f'activationFunction="{activation}"')
        normalization = layer.get("normalizationMethod") or model.get("normalizationMethod", "none")
        if normalization not in ("none", "softmax", "simplemax"):
            raise unsupported(layer, where=where, detail=f'normalizationMethod="{normalization}"')
        neurons = layer.findall("Neuron")
        weights = np.zeros((len(ids), len(neurons)))
        bias = np.zeros(len(neurons))
        for j, neuron in enumerate(neurons):
            if neuron.get("width") is not None or neuron.get("altitude") is not None:
                raise unsupported(neuron, where=where, detail="with width/altitude (radial basis)")
            bias[j] = float(neuron.get("bias", "0") or "0")
            for con in neuron.findall("Con"):
                source = con.get("from", "") or ""
                if source not in ids:
                    raise ModelRejected(
                        f"Con (line {con.line}) comes from unknown neuron {source!r}", where=where
                    )
                weights[ids[source], j] += float(con.get("weight", "0") or "0")
        threshold = float(layer.get("threshold") or model.get("threshold", "0") or "0")
        altitude = float(layer.get("altitude") or model.get("altitude", "1") or "1")
        return Layer(weights, bias, activation or "", normalization or "none", threshold, altitude)

    def _outputs(self, element: Element, info: ModelInfo, ids: dict[str, int], where: str) -> None:
        outputs = element.find("NeuralOutputs")
        if outputs is None:
            raise missing_attribute(element, "NeuralOutputs", where=where)
        self.class_columns: list[tuple[str, int]] = []
        self.value_column: tuple[int, NormContinuous | None] | None = None
        for out in outputs.findall("NeuralOutput"):
            neuron = out.get("outputNeuron", "") or ""
            derived = out.find("DerivedField")
            if neuron not in ids or derived is None:
                raise missing_attribute(out, "a known outputNeuron and a DerivedField", where=where)
            expr = find_expression(derived, info.scope, where=where)
            if isinstance(expr, NormDiscrete) and self.function == "classification":
                raw = next(iter(derived.elements())).get("value", "") or ""
                self.class_columns.append((canonical(raw, info.classes), ids[neuron]))
            elif isinstance(expr, FieldRef | NormContinuous) and self.function == "regression":
                self.value_column = (
                    ids[neuron],
                    expr if isinstance(expr, NormContinuous) else None,
                )
            else:
                raise unsupported(derived, where=where, detail="in NeuralOutput")
        seen = list(info.classes)
        for label, _ in self.class_columns:
            if label not in seen:
                seen.append(label)
        self.classes = tuple(seen) if self.function == "classification" else ()
        if self.function == "regression" and self.value_column is None:
            raise missing_attribute(outputs, "a NeuralOutput for the target", where=where)

    def predict(self, env: Env) -> Prediction:
        x = np.stack([cast_column(e.evaluate(env), "double").floats() for e in self.inputs], axis=1)
        missing = np.isnan(x).any(axis=1)
        for layer in self.layers:
            x = layer.forward(x)
        if self.function == "regression" and self.value_column is not None:
            column, norm = self.value_column
            y = x[:, column]
            if norm is not None:
                low, high = min(norm.norm), max(norm.norm)
                outside = ~missing & ((y < low) | (y > high))
                if outside.any():  # JPMML does not extrapolate a NormContinuous backwards
                    row = env.first_row(outside)
                    raise SchemaMismatch(
                        f"network output {float(y[outside][0])!r} lies outside the "
                        f"NormContinuous range [{low}, {high}] of the target (row {row})",
                        where=env.where,
                        row=row,
                    )
                y = denormalize(norm.orig, norm.norm, y)
            return Prediction(env.n, value=np.where(missing, np.nan, y))
        probs = np.zeros((env.n, len(self.classes)))
        for label, column in self.class_columns:
            probs[:, self.classes.index(label)] = x[:, column]
        probs[missing] = np.nan
        return Prediction.from_probabilities(self.classes, probs)


@register("NeuralNetwork")
def compile_neural(element: Element, info: ModelInfo, context: Context) -> Core:
    return NeuralCore(element, info, context.where)
