"""GeneralRegressionModel: regression / generalLinear / generalizedLinear / multinomialLogistic.

The design matrix is built from the PPMatrix: a parameter's column is the product of its cells,
1 for a factor cell whose level matches, the covariate raised to the cell value for a covariate
cell; a parameter without cells (the intercept) is 1. ``eta = X @ beta + offset`` goes through the
inverse link (identity, log, logit, probit, cloglog, loglog, cauchit, power); binomial models with
trials multiply the mean by the number of trials. A missing predictor makes the row missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eventml.errors import ModelRejected

from ._base import Context, Core, ModelInfo, Prediction, canonical, register
from ._fields import Env, parse_value
from ._regression import inverse_link
from ._values import FloatArray, Scalar, cast_column
from ._xml import Element, missing_attribute, unsupported

MODEL_TYPES = frozenset({"regression", "generalLinear", "generalizedLinear", "multinomialLogistic"})
LINKS = frozenset({"identity", "log", "logit", "probit", "cloglog", "loglog", "cauchit", "power"})


@dataclass(frozen=True)
class Cell:
    predictor: str
    factor: bool
    value: Scalar  # factor level, or covariate exponent


def _number(element: Element, name: str, *, where: str, default: str | None = None) -> float:
    text = element.get(name, default)
    if text is None:
        raise missing_attribute(element, name, where=where)
    try:
        return float(text)
    except ValueError:
        raise ModelRejected(
            f"{element.tag} (line {element.line}) attribute {name} is not a number", where=where
        ) from None


class GeneralRegressionCore(Core):
    def __init__(self, element: Element, info: ModelInfo, where: str) -> None:
        self.function = info.function
        self.where = where
        self.model_type = element.get("modelType", "")
        if self.model_type not in MODEL_TYPES:
            raise unsupported(element, where=where, detail=f'modelType="{self.model_type}"')
        default_link = "identity" if self.model_type != "multinomialLogistic" else "logit"
        self.link = element.get("linkFunction", default_link) or default_link
        if self.link not in LINKS:
            raise unsupported(element, where=where, detail=f'linkFunction="{self.link}"')
        if self.model_type != "generalizedLinear" and self.model_type != "multinomialLogistic":
            self.link = "identity"
        self.link_power = _number(element, "linkParameter", where=where, default="1")
        self.offset_value = _number(element, "offsetValue", where=where, default="0")
        self.offset_field = element.get("offsetVariable")
        self.trials_value = _number(element, "trialsValue", where=where, default="nan")
        self.trials_field = element.get("trialsVariable")
        for name in (self.offset_field, self.trials_field):
            if name is not None:
                info.scope.lookup(name, element, where=where)
        params = element.find("ParameterList")
        if params is None:
            raise missing_attribute(element, "ParameterList", where=where)
        self.parameters = [p.get("name", "") or "" for p in params.findall("Parameter")]
        factors = self._predictors(element, "FactorList", info, where)
        covariates = self._predictors(element, "CovariateList", info, where)
        self.cells: dict[str, list[Cell]] = {p: [] for p in self.parameters}
        matrix = element.find("PPMatrix")
        for cell in matrix.findall("PPCell") if matrix is not None else []:
            name, param = cell.get("predictorName", ""), cell.get("parameterName", "")
            value = cell.get("value")
            if param not in self.cells or value is None or not name:
                raise missing_attribute(
                    cell, "a known parameterName, predictorName and value", where=where
                )
            if cell.get("targetCategory") is not None:
                raise unsupported(cell, where=where, detail="with targetCategory")
            if name in factors:
                level = parse_value(cell, value, factors[name], where=where)
                self.cells[param].append(Cell(name, True, level))
            elif name in covariates:
                self.cells[param].append(Cell(name, False, _number(cell, "value", where=where)))
            else:
                raise ModelRejected(
                    f"PPCell (line {cell.line}) names predictor {name!r}, "
                    "not in FactorList or CovariateList",
                    where=where,
                )
        self._betas(element, info, where)

    def _predictors(
        self, element: Element, tag: str, info: ModelInfo, where: str
    ) -> dict[str, str]:
        found = element.find(tag)
        out: dict[str, str] = {}
        for predictor in found.findall("Predictor") if found is not None else []:
            if predictor.find("Categories") is not None or predictor.get("contrastMatrixType"):
                raise unsupported(predictor, where=where, detail="with contrasts")
            name = predictor.get("name", "") or ""
            out[name] = info.scope.lookup(name, predictor, where=where).data_type
        return out

    def _betas(self, element: Element, info: ModelInfo, where: str) -> None:
        matrix = element.find("ParamMatrix")
        if matrix is None:
            raise missing_attribute(element, "ParamMatrix", where=where)
        self.betas: dict[str | None, np.ndarray] = {}
        for cell in matrix.findall("PCell"):
            param = cell.get("parameterName", "")
            if param not in self.cells:
                raise missing_attribute(cell, "a known parameterName", where=where)
            category = cell.get("targetCategory")
            if category is not None:
                category = canonical(category, info.classes)
            row = self.betas.setdefault(category, np.zeros(len(self.parameters)))
            row[self.parameters.index(param or "")] = _number(cell, "beta", where=where)
        if self.function == "regression":
            if set(self.betas) - {None}:
                raise unsupported(matrix, where=where, detail="with targetCategory in regression")
            self.classes = ()
            return
        reference = element.get("targetReferenceCategory")
        if reference is not None:
            reference = canonical(reference, info.classes)
        seen = list(info.classes)
        for category in [*self.betas, reference]:
            if category is not None and category not in seen:
                seen.append(category)
        self.classes = tuple(seen)
        missing = [c for c in self.classes if c not in self.betas]
        if self.model_type == "multinomialLogistic" or len(self.classes) != 2:
            if len(missing) != 1:
                raise unsupported(element, where=where, detail="without one reference category")
        elif len(missing) != 1:
            raise unsupported(element, where=where, detail="with two sets of betas")
        self.reference = missing[0]

    def _design(self, env: Env) -> tuple[FloatArray, np.ndarray]:
        n = env.n
        design = np.ones((n, len(self.parameters)))
        missing = np.zeros(n, dtype=bool)
        for j, param in enumerate(self.parameters):
            for cell in self.cells[param]:
                column = env.get(cell.predictor)
                missing |= column.missing()
                if cell.factor:
                    if column.numeric:
                        hit = column.floats() == float(cell.value)
                    else:
                        hit = np.equal(column.values, cell.value)
                    design[:, j] *= hit
                else:
                    x = cast_column(column, "double").floats()
                    exponent = float(cell.value)
                    design[:, j] *= x if exponent == 1.0 else np.power(x, exponent)
        return design, missing

    def _offset(self, env: Env) -> FloatArray:
        offset = np.full(env.n, self.offset_value)
        if self.offset_field is not None:
            offset = offset + cast_column(env.get(self.offset_field), "double").floats()
        return offset

    def _mean(self, eta: FloatArray) -> FloatArray:
        if self.link == "identity":
            return eta
        if self.link == "log":
            with np.errstate(over="ignore"):
                return np.asarray(np.exp(eta))
        if self.link == "power":
            if self.link_power == 0:
                return np.asarray(np.exp(eta))
            with np.errstate(invalid="ignore"):
                return np.asarray(np.power(eta, 1.0 / self.link_power))
        return inverse_link(self.link, eta)

    def predict(self, env: Env) -> Prediction:
        design, missing = self._design(env)
        offset = self._offset(env)
        if self.function == "regression":
            eta = design @ self.betas.get(None, np.zeros(len(self.parameters))) + offset
            value = self._mean(eta)
            trials = np.full(env.n, self.trials_value)
            if self.trials_field is not None:
                trials = cast_column(env.get(self.trials_field), "double").floats()
            if self.trials_field is not None or not math.isnan(self.trials_value):
                value = value * trials
            return Prediction(env.n, value=np.where(missing, np.nan, value))
        probs = np.zeros((env.n, len(self.classes)))
        if self.model_type == "multinomialLogistic" or len(self.classes) != 2:
            for category, beta in self.betas.items():
                probs[:, self.classes.index(category or "")] = design @ beta + offset
            with np.errstate(over="ignore"):
                shifted = np.exp(probs - probs.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
        else:
            ((category, beta),) = self.betas.items()
            p = self._mean(design @ beta + offset)
            probs[:, self.classes.index(category or "")] = p
            probs[:, self.classes.index(self.reference)] = 1.0 - p
        probs[missing] = np.nan
        return Prediction.from_probabilities(self.classes, probs)


@register("GeneralRegressionModel")
def compile_general_regression(element: Element, info: ModelInfo, context: Context) -> Core:
    for child in element.elements():
        if child.tag in ("BaseCumHazardTables", "EventValues", "Matrix"):
            raise unsupported(child, where=context.where)
    if element.get("cumulativeLink") is not None:
        raise unsupported(element, where=context.where, detail="cumulativeLink")
    return GeneralRegressionCore(element, info, context.where)
