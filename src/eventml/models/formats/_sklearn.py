"""scikit-learn estimators in skops files (never pickle), with a fixed rule for trusted types.

skops refuses to build any type it does not trust. Beyond skops' own default trust, eventml
trusts exactly: classes defined inside the ``sklearn`` package (estimators and their internal
parts such as a tree predictor). Functions, and anything from another package, are refused
at load time with the list of types, so a file cannot make eventml call arbitrary code.

Features: ``feature_names_in_`` when the estimator was fitted on named columns, else the
descriptor's ``inputs`` (``models push --features a,b,...``). Scoring runs with one BLAS /
OpenMP thread (threadpoolctl): small batches on few cores ran 100x slower oversubscribed.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import ModelRejected
from eventml.models.base import (
    FeatureMatrix,
    LoadedModel,
    ModelFormat,
    label_outputs,
    value_outputs,
)


def trusted_sklearn_class(name: str) -> bool:
    """Whether a skops type name is a class defined in the ``sklearn`` package."""
    module_name, _, attr = name.rpartition(".")
    if not module_name.startswith("sklearn.") or not attr:
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    return inspect.isclass(obj) and getattr(obj, "__module__", "").startswith("sklearn")


def load_skops(payload: bytes, where: str, trust: Any = trusted_sklearn_class) -> Any:
    """Build the object in a skops payload, refusing any type outside the trust rule."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=payload)
    except Exception as exc:  # skops raises zipfile/json/key errors for non-skops bytes
        raise ModelRejected(
            f"expected a skops file, got {type(exc).__name__}: {exc}", where=where
        ) from exc
    refused = [t for t in untrusted if not trust(t)]
    if refused:
        raise ModelRejected(
            f"expected only trusted types in the skops file, got {refused}", where=where
        )
    try:
        return sio.loads(payload, trusted=list(untrusted))
    except Exception as exc:  # any failure to build is a rejection, never a crash
        raise ModelRejected(
            f"expected a loadable skops file, got {type(exc).__name__}: {exc}", where=where
        ) from exc


class SklearnModel(LoadedModel):
    """A fitted scikit-learn estimator or pipeline."""

    def __init__(self, estimator: Any, descriptor: ev.ModelDescriptor, settings: Settings) -> None:
        where = f"model {descriptor.name}"
        if not hasattr(estimator, "predict"):
            raise ModelRejected(
                f"expected a fitted estimator with predict(), got {type(estimator).__name__}",
                where=where,
            )
        self.estimator = estimator
        self.threads = settings.threads
        named = getattr(estimator, "feature_names_in_", None)
        names = (
            [str(n) for n in named] if named is not None else [s.name for s in descriptor.inputs]
        )
        width = getattr(estimator, "n_features_in_", None)
        if not names or (width is not None and len(names) != width):
            raise ModelRejected(
                f"expected {width} feature names (fitted on named columns, or --features), "
                f"got {names}",
                where=where,
            )
        self.feature_names = tuple(names)
        self.inputs = [ev.TensorSpec(name=n, dtype="double", shape=[-1]) for n in names]
        self._matrix = FeatureMatrix(names, descriptor.name)
        classes = getattr(estimator, "classes_", None)
        if classes is not None and hasattr(estimator, "predict_proba"):
            self.kind = "classification"
            self.classes = tuple(str(c) for c in classes)
            self.outputs = [
                ev.TensorSpec(name="label", dtype="string", shape=[-1]),
                ev.TensorSpec(name="probabilities", dtype="double", shape=[-1, len(classes)]),
            ]
        else:
            self.kind = "regression"
            self.outputs = [ev.TensorSpec(name="value", dtype="double", shape=[-1])]

    def predict_batch(self, rows: Sequence[Mapping[str, ev.Feature]]) -> Sequence[ev.Output]:
        if not rows:
            return []
        from threadpoolctl import threadpool_limits

        x = self._matrix.matrix(rows)
        # Columns are already matched by name, so sklearn's warning that an array has no
        # column names (fitted on a DataFrame) says nothing here.
        with threadpool_limits(limits=self.threads), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self.kind == "classification":
                probs = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
                labels = self.estimator.predict(x)
                return label_outputs(self.classes, probs, list(labels))
            return value_outputs(self.estimator.predict(x))


class SklearnFormat(ModelFormat):
    """``.skops`` files holding a scikit-learn estimator."""

    name = "sklearn"

    def detect(self, path: Path, head: bytes) -> bool:
        return path.is_file() and path.suffix.lower() == ".skops"

    def load(self, payload: bytes, descriptor: ev.ModelDescriptor) -> SklearnModel:
        where = f"model {descriptor.name}"
        return SklearnModel(load_skops(payload, where), descriptor, Settings.from_env())
