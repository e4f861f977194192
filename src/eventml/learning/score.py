"""Scoring a view's rows with a loaded model, in vectorized batches.

Two paths, same answers:

- the general path hands each batch's features (the prediction events' own feature maps:
  their MessagePack bytes when the view was folded from the log, as the engine hands
  them, else decoded from the view's ``features`` text) to
  :meth:`LoadedModel.predict_batch`, so any format scores exactly what it would have
  been served;
- a model that exposes an onnxruntime ``session`` with one wide ``[N, k]`` input (what
  ``eventml train`` writes) is fed the view's float columns directly as one float32
  matrix per batch: the same numbers the format's own feature mapping would build,
  without a Python dict per row. This is a capability check (the attributes the ONNX
  plugin documents), not a choice by type; anything else takes the general path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from eventml.errors import InputError, SchemaMismatch
from eventml.learning.views import FEATURE_PREFIX, class_name
from eventml.models._rows import EncodedRows
from eventml.models.base import LoadedModel, normalize

BATCH = 20_000


@dataclass
class Scored:
    """A model's answers for every row: labels + class probabilities, or values."""

    kind: str
    classes: list[str]
    labels: np.ndarray | None = None
    proba: np.ndarray | None = None
    values: np.ndarray | None = None

    def positive(self, positive: str) -> np.ndarray:
        """Probability of class ``positive`` per row (0 where the model lacks the class)."""
        if self.proba is None:
            raise InputError("expected a classifier's probabilities, got values")
        if positive not in self.classes:
            return np.zeros(self.proba.shape[0])
        return np.asarray(self.proba[:, self.classes.index(positive)], dtype=np.float64)

    def take(self, rows: np.ndarray) -> Scored:
        """The answers of ``rows`` (indices), in that order."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Scored(
            self.kind, self.classes, pick(self.labels), pick(self.proba), pick(self.values)
        )


def feature_columns(model: LoadedModel, table: pa.Table, ref: str) -> list[str]:
    """The view column feeding each model input, matched by normalized name."""
    have = {
        normalize(c[len(FEATURE_PREFIX) :]): c
        for c in table.column_names
        if c.startswith(FEATURE_PREFIX)
    }
    missing = [f for f in model.feature_names if normalize(f) not in have]
    if missing:
        shown = sorted(c[len(FEATURE_PREFIX) :] for c in have.values())
        raise InputError(
            f"expected the events to carry features {missing} that model {ref} reads, "
            f"got features {shown}"
        )
    cols = [have[normalize(f)] for f in model.feature_names]
    bad = [c for c in cols if not pa.types.is_floating(table[c].type)]
    if bad:
        raise InputError(
            f"expected numeric features for model {ref}, got "
            + ", ".join(f"{c[len(FEATURE_PREFIX) :]!r} of type {table[c].type}" for c in bad)
        )
    return cols


def matrix(table: pa.Table, cols: list[str], dtype: Any = np.float64) -> np.ndarray:
    """The columns as a ``[rows, len(cols)]`` array of ``dtype`` (float64); nulls are NaN."""
    out = np.empty((table.num_rows, len(cols)), dtype)
    for j, c in enumerate(cols):
        out[:, j] = table[c].to_numpy(zero_copy_only=False)
    return out


def scores_columns(model: LoadedModel) -> bool:
    """Whether :func:`score` feeds ``model`` the float feature columns (no per-row maps)."""
    return _fast_session(model) is not None


def _fast_session(model: LoadedModel) -> Any:
    session = getattr(model, "session", None)
    if session is None or model.kind not in ("classification", "regression"):
        return None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or len(model.feature_names) < 2:
        return None
    if model.kind == "classification" and (not model.classes or len(session.get_outputs()) != 2):
        return None
    if inputs[0].type not in ("tensor(float)", "tensor(double)"):
        return None
    return session


def score(
    model: LoadedModel,
    table: pa.Table,
    ref: str,
    progress: Callable[[int], None] | None = None,
    batch: int = BATCH,
    rows: pa.ChunkedArray | None = None,
) -> Scored:
    """Score every row of a view table with ``model`` (see the module docstring).

    ``rows``: each row's features as MessagePack (:attr:`View.feature_bytes`, binary);
    without them the general path decodes the table's ``features`` text.
    """
    if model.kind not in ("classification", "regression"):
        raise InputError(
            f"expected a classifier or a regressor for replay, got {model.kind} model {ref}"
        )
    cols = feature_columns(model, table, ref)
    session = _fast_session(model)
    n = table.num_rows
    labels: list[Any] = []
    probas: list[np.ndarray] = []
    values: list[np.ndarray] = []
    classes: list[str] = list(model.classes)
    if session is not None:
        name = session.get_inputs()[0].name
        dtype = np.float32 if session.get_inputs()[0].type == "tensor(float)" else np.float64
        x_all = matrix(table, cols, dtype)
        for start in range(0, n, batch):
            raw = session.run(None, {name: x_all[start : start + batch]})
            if model.kind == "classification":
                probas.append(np.asarray(raw[1], dtype=np.float64))
            else:
                values.append(np.asarray(raw[0], dtype=np.float64).reshape(-1))
            if progress:
                progress(min(start + batch, n))
    else:
        decode = msgspec.json.Decoder(list[dict[str, Any]]).decode
        for start in range(0, n, batch):
            chunk: Sequence[Any]
            if rows is not None:
                chunk = EncodedRows(rows.slice(start, batch).to_pylist())
            else:
                text = table["features"].slice(start, batch).to_pylist()
                chunk = decode("[" + ",".join(text) + "]")
            try:
                outputs = model.predict_batch(chunk)
            except SchemaMismatch as exc:
                raise InputError(
                    f"expected the events' features to fit model {ref}, got {exc.message}",
                    where=f"view row {start + (exc.row or 0)}",
                ) from exc
            if model.kind == "classification":
                if not classes:
                    classes = [str(c) for c in outputs[0]["probabilities"]] if outputs else []
                probas.append(
                    np.array([[o["probabilities"].get(c, 0.0) for c in classes] for o in outputs])
                )
                labels.extend(class_name(o["label"]) for o in outputs)
            else:
                values.append(np.array([o["value"] for o in outputs], dtype=np.float64))
            if progress:
                progress(min(start + batch, n))
    if model.kind == "classification":
        proba = np.vstack(probas) if probas else np.empty((0, len(classes)))
        names = np.array(classes, dtype=object)
        if labels:  # the model's own answers (a PMML threshold may differ from the argmax)
            labels_arr = np.array(labels, dtype=object)
        else:
            labels_arr = names[np.argmax(proba, axis=1)] if len(proba) else names[:0]
        return Scored(kind="classification", classes=classes, labels=labels_arr, proba=proba)
    return Scored(
        kind="regression", classes=[], values=np.concatenate(values) if values else np.empty(0)
    )
