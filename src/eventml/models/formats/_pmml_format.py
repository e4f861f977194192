"""PMML models, scored by eventml's own float64 evaluator (:mod:`._pmml`) like JPMML.

Inputs are the model's active MiningFields, read from the file. Continuous fields take
numbers; categorical and ordinal fields take their values as text (a number is matched by
its PMML text form, ``3`` for ``3``). A missing value (null) is handled as the model says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eventml import events as ev
from eventml.errors import SchemaMismatch, expected_got
from eventml.models.base import (
    FeatureMatrix,
    LoadedModel,
    ModelFormat,
    label_outputs,
    value_outputs,
)
from eventml.models.formats._pmml import PmmlModel, load_pmml


def _text(value: ev.Feature) -> object:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class PmmlLoaded(LoadedModel):
    """A PMML document with the mapping from records to its fields."""

    def __init__(self, model: PmmlModel, name: str) -> None:
        self.model = model
        self.feature_names = tuple(f.name for f in model.inputs)
        self.inputs = [
            ev.TensorSpec(name=f.name, dtype=f.data_type, shape=[-1]) for f in model.inputs
        ]
        self.kind = model.function
        self.classes = model.classes
        target = model.target or "prediction"
        self.outputs = [ev.TensorSpec(name=target, dtype="double", shape=[-1])]
        self._continuous = [f.optype == "continuous" for f in model.inputs]
        self._matrix = FeatureMatrix(
            [f.name for f, c in zip(model.inputs, self._continuous, strict=True) if c], name
        )
        self._all = FeatureMatrix(self.feature_names, name)

    def predict_batch(self, rows: Sequence[Mapping[str, ev.Feature]]) -> Sequence[ev.Output]:
        if not rows:
            return []
        columns: dict[str, np.ndarray] = {}
        if any(self._continuous):
            x = self._matrix.matrix(rows)
            for i, name in enumerate(self._matrix.names):
                columns[name] = x[:, i]
        if not all(self._continuous):
            fields = self._all.columns_for(rows[0])
            for i, (name, cont) in enumerate(
                zip(self.feature_names, self._continuous, strict=True)
            ):
                if cont:
                    continue
                field = fields[i]
                if field is None:
                    raise SchemaMismatch(
                        f"expected feature {name!r}, got fields {sorted(rows[0])}", where="row 0"
                    )
                try:
                    columns[name] = np.array([_text(r[field]) for r in rows], dtype=object)
                except KeyError:
                    raise SchemaMismatch(
                        expected_got(f"feature {name!r} in every row", "a row without it")
                    ) from None
        result = self.model.predict(columns)
        if result.value is not None:
            return value_outputs(result.value)
        assert result.probabilities is not None  # classification always has probabilities
        labels = None if result.label is None else list(result.label)
        return label_outputs(self.classes, result.probabilities, labels)


class PmmlFormat(ModelFormat):
    """``.pmml`` / ``.xml`` files whose root element is PMML."""

    name = "pmml"

    def detect(self, path: Path, head: bytes) -> bool:
        return path.is_file() and b"<PMML" in head[:4096]

    def load(self, payload: bytes, descriptor: ev.ModelDescriptor) -> PmmlLoaded:
        where = f"model {descriptor.name}"
        return PmmlLoaded(load_pmml(payload, where=where), descriptor.name)
