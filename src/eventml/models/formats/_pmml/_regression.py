"""RegressionModel: RegressionTables with Numeric/Categorical predictors and PredictorTerms,
and the normalization methods JPMML applies (softmax, simplemax, logit, probit, cloglog,
loglog, cauchit, exp, none).

As in JPMML, a missing numeric predictor makes the row's result missing and a missing
categorical predictor contributes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._base import Context, Core, ModelInfo, Prediction, register
from ._fields import Env, parse_value
from ._values import FloatArray, Scalar, cast_column
from ._xml import Element, missing_attribute, unsupported

NORMALIZATIONS = frozenset(
    {"none", "simplemax", "softmax", "logit", "probit", "cloglog", "exp", "loglog", "cauchit"}
)
BINARY = frozenset({"logit", "probit", "cloglog", "loglog", "cauchit"})

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def inverse_link(name: str, y: FloatArray) -> FloatArray:
    """The normalization of one linear predictor (shared with GeneralRegressionModel)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if name in ("logit", "softmax"):
            return np.asarray(1.0 / (1.0 + np.exp(-y)))
        if name == "exp":
            return np.asarray(np.exp(y))
        if name == "probit":
            return np.asarray(0.5 * _erfc(-y / math.sqrt(2.0)))
        if name == "cloglog":
            return np.asarray(1.0 - np.exp(-np.exp(y)))
        if name == "loglog":
            return np.asarray(np.exp(-np.exp(-y)))
        if name == "cauchit":
            return np.asarray(0.5 + np.arctan(y) / math.pi)
    return y


@dataclass(frozen=True)
class Table:
    intercept: float
    category: str | None
    numeric: tuple[tuple[str, float, float], ...]  # field, exponent, coefficient
    categorical: tuple[tuple[str, Scalar, float], ...]  # field, value, coefficient
    terms: tuple[tuple[tuple[str, ...], float], ...]  # fields, coefficient

    def evaluate(self, env: Env) -> FloatArray:
        y = np.full(env.n, self.intercept)
        for name, exponent, coefficient in self.numeric:
            x = cast_column(env.get(name), "double").floats()
            y = y + coefficient * (x if exponent == 1.0 else np.power(x, exponent))
        for name, value, coefficient in self.categorical:
            column = env.get(name)
            hit = column.floats() == value if column.numeric else np.equal(column.values, value)
            y = y + np.where(hit, coefficient, 0.0)
        for names, coefficient in self.terms:
            product = np.full(env.n, coefficient)
            for name in names:
                product = product * cast_column(env.get(name), "double").floats()
            y = y + product
        return y


def parse_table(element: Element, info: ModelInfo, *, where: str) -> Table:
    try:
        intercept = float(element.get("intercept", "0") or "0")
    except ValueError:
        raise missing_attribute(element, "intercept (a number)", where=where) from None
    numeric, categorical, terms = [], [], []
    for child in element.elements():
        name = child.get("name", "") or ""
        coefficient = float(child.get("coefficient", "nan") or "nan")
        if math.isnan(coefficient):
            raise missing_attribute(child, "coefficient", where=where)
        if child.tag == "NumericPredictor":
            info.scope.lookup(name, child, where=where)
            numeric.append((name, float(child.get("exponent", "1") or "1"), coefficient))
        elif child.tag == "CategoricalPredictor":
            field = info.scope.lookup(name, child, where=where)
            value = child.get("value")
            if value is None:
                raise missing_attribute(child, "value", where=where)
            categorical.append(
                (name, parse_value(child, value, field.data_type, where=where), coefficient)
            )
        elif child.tag == "PredictorTerm":
            refs = child.findall("FieldRef")
            for ref in refs:
                info.scope.lookup(ref.get("field", "") or "", ref, where=where)
            terms.append((tuple(ref.get("field", "") or "" for ref in refs), coefficient))
        else:
            raise unsupported(child, where=where)
    return Table(
        intercept, element.get("targetCategory"), tuple(numeric), tuple(categorical), tuple(terms)
    )


class RegressionCore(Core):
    def __init__(
        self, function: str, classes: tuple[str, ...], tables: list[Table], method: str
    ) -> None:
        self.function = function
        self.tables = tables
        self.method = method
        if function == "classification":
            seen = list(classes)
            for table in tables:
                if table.category is not None and table.category not in seen:
                    seen.append(table.category)
            self.classes = tuple(seen)
        else:
            self.classes = ()

    def predict(self, env: Env) -> Prediction:
        ys = [table.evaluate(env) for table in self.tables]
        if self.function == "regression":
            return Prediction(env.n, value=inverse_link(self.method, ys[0]))
        probs = self._normalize(np.stack(ys, axis=1))
        out = np.zeros((env.n, len(self.classes)))
        for j, table in enumerate(self.tables):
            out[:, self.classes.index(table.category or "")] = probs[:, j]
        out[np.isnan(probs).any(axis=1)] = np.nan
        return Prediction.from_probabilities(self.classes, out)

    def _normalize(self, y: FloatArray) -> FloatArray:
        k = y.shape[1]
        with np.errstate(over="ignore", invalid="ignore"):
            if self.method == "softmax":
                shifted = np.exp(y - np.max(y, axis=1, keepdims=True))
                return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
            if self.method == "simplemax":
                return np.asarray(y / y.sum(axis=1, keepdims=True))
            if self.method == "exp":
                return np.asarray(np.exp(y))
        out = y.copy()
        if self.method in BINARY:
            out[:, 0] = inverse_link(self.method, y[:, 0])
        # "none" and the binary links: the last category gets 1 - the sum of the others
        out[:, k - 1] = 1.0 - out[:, : k - 1].sum(axis=1)
        return out


@register("RegressionModel")
def compile_regression(element: Element, info: ModelInfo, context: Context) -> Core:
    where = context.where
    method = element.get("normalizationMethod", "none") or "none"
    if method not in NORMALIZATIONS:
        raise unsupported(element, where=where, detail=f'normalizationMethod="{method}"')
    tables = [parse_table(t, info, where=where) for t in element.findall("RegressionTable")]
    if not tables:
        raise missing_attribute(element, "RegressionTable", where=where)
    if info.function == "regression":
        if len(tables) != 1 or method in ("simplemax",):
            raise unsupported(element, where=where, detail=f'normalizationMethod="{method}"')
    else:
        if any(t.category is None for t in tables):
            raise missing_attribute(element, "targetCategory", where=where)
        if method in BINARY and len(tables) != 2:
            raise unsupported(
                element, where=where, detail=f'normalizationMethod="{method}" (>2 classes)'
            )
        if method == "exp":
            raise unsupported(element, where=where, detail='normalizationMethod="exp"')
    return RegressionCore(info.function, info.classes, tables, method)
