"""The public API: :func:`load_pmml` and :class:`PmmlModel` with its fields and results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from eventml.errors import ModelRejected

from ._base import Context, Model, compile_model, find_model
from ._expressions import compile_derived_fields
from ._fields import (
    DataField,
    Env,
    Evaluable,
    FieldInfo,
    Scope,
    parse_data_dictionary,
    prepare_inputs,
)
from ._xml import Element, parse_xml, unsupported

SUPPORTED_VERSIONS = ("4.",)
TOP_LEVEL = frozenset({"Header", "DataDictionary", "TransformationDictionary", "MiningBuildTask"})


@dataclass(frozen=True)
class PmmlField:
    """One input of a PMML model (an active MiningField with its DataDictionary entry)."""

    name: str
    optype: str
    data_type: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class PmmlResult:
    """Scores for a batch: ``value`` for regression, ``label`` and ``probabilities`` for
    classification (columns in the order of :attr:`PmmlModel.classes`, a class the model gives
    no probability is 0.0). A row without a prediction (JPMML's null: e.g. a missing input the
    model does not handle) holds NaN / None; input JPMML would refuse raises SchemaMismatch."""

    value: npt.NDArray[np.float64] | None
    label: npt.NDArray[np.object_] | None
    probabilities: npt.NDArray[np.float64] | None


class PmmlModel:
    """A loaded PMML document, ready to score batches of rows column-wise in float64."""

    def __init__(
        self,
        model: Model,
        data_fields: Mapping[str, DataField],
        lazy: Mapping[str, Evaluable],
        where: str,
    ) -> None:
        self._model = model
        self._data_fields = data_fields
        self._lazy = lazy
        self.where = where
        mining = model.info.mining
        self._mining = mining
        self.inputs: tuple[PmmlField, ...] = tuple(
            _field(data_fields[m.name]) for m in mining if m.usage == "active"
        )
        self.target: str | None = model.info.target
        self.function = cast(Literal["regression", "classification"], model.function)
        self.classes: tuple[str, ...] = model.classes if self.function == "classification" else ()

    def predict(self, columns: Mapping[str, np.ndarray]) -> PmmlResult:
        """Score every row; ``columns`` maps PMML field names to equal-length arrays."""
        n, values = prepare_inputs(columns, self._data_fields, self._mining, where=self.where)
        root = Env(n, values, self._lazy, None, self.where)
        prediction, _env = self._model.evaluate(root)
        if self.function == "regression":
            value = prediction.value if prediction.value is not None else np.full(n, np.nan)
            return PmmlResult(np.asarray(value, dtype=np.float64), None, None)
        probabilities = prediction.probabilities
        if probabilities is None:
            probabilities = np.full((n, len(self.classes)), np.nan)
        labels = (
            prediction.labels if prediction.labels is not None else np.full(n, None, dtype=object)
        )
        return PmmlResult(None, labels, probabilities)


def _field(data: DataField) -> PmmlField:
    values = data.labels if data.optype != "continuous" else ()
    return PmmlField(data.name, data.optype, data.data_type, values)


def load_pmml(data: bytes, *, where: str) -> PmmlModel:
    """Parse and compile a PMML 4.x document; anything not implemented is refused here.

    Raises :class:`~eventml.errors.ModelRejected` for bytes that are not a safe, well-formed PMML
    document and :class:`~eventml.errors.UnsupportedModel` for elements eventml does not score.
    """
    root = parse_xml(data, where=where)
    version = root.get("version") or ""
    if not version.startswith(SUPPORTED_VERSIONS):
        raise unsupported(root, where=where, detail=f'version="{version}"')
    dictionary = root.find("DataDictionary")
    if dictionary is None:
        raise ModelRejected("PMML document has no DataDictionary", where=where)
    data_fields = parse_data_dictionary(dictionary, where=where)
    scope = Scope({name: FieldInfo(f.data_type, f.optype) for name, f in data_fields.items()})
    lazy = _transformations(root, scope, where=where)
    element = find_model(root, where=where)
    for child in root.elements():
        if child is not element and child.tag not in TOP_LEVEL:
            raise unsupported(child, where=where)
    model = compile_model(element, Context(data_fields, scope, where))
    for spec in model.info.mining:
        if spec.name not in data_fields:
            raise ModelRejected(
                f"MiningField '{spec.name}' of the top-level model is not in the DataDictionary",
                where=where,
            )
    return PmmlModel(model, data_fields, lazy, where)


def _transformations(root: Element, scope: Scope, *, where: str) -> Mapping[str, Evaluable]:
    dictionary = root.find("TransformationDictionary")
    if dictionary is None:
        return {}
    for child in dictionary.elements():
        if child.tag != "DerivedField":
            raise unsupported(child, where=where)
    return compile_derived_fields(dictionary.findall("DerivedField"), scope, where=where)
