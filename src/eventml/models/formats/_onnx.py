"""ONNX models, scored by onnxruntime on the CPU with one intra-op thread by default.

Inputs: either one 2-D tensor ``[N, k]`` whose columns are the features named in the model's
metadata (``feature_names``, a JSON list, as ``eventml train`` writes it) or in the
descriptor's ``inputs`` (``models push --features a,b,...``); or one ``[N]`` / ``[N, 1]``
tensor per feature, named by the feature (skl2onnx with one input per column).

Outputs: a label tensor plus probabilities (a tensor ``[N, C]``, or skl2onnx's ZipMap list of
dicts) is classification, the classes taken from the ZipMap keys, the ``classes`` metadata
or the label values; a single float output of one column is regression; anything else is
returned as named lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import ModelRejected
from eventml.models.base import (
    FeatureMatrix,
    Kind,
    LoadedModel,
    ModelFormat,
    label_outputs,
    value_outputs,
)

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
}


def session_options(settings: Settings) -> ort.SessionOptions:
    """One intra-op and one inter-op thread by default: small batches, no oversubscription."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return opts


def _shape(shape: Sequence[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


class OnnxModel(LoadedModel):
    """An onnxruntime session with the feature mapping and output canonicalization."""

    def __init__(self, payload: bytes, descriptor: ev.ModelDescriptor, settings: Settings) -> None:
        where = f"model {descriptor.name}"
        try:
            self.session = ort.InferenceSession(
                payload, session_options(settings), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad bytes
            reason = " ".join(str(exc).split())  # onnxruntime's text spans lines
            raise ModelRejected(f"expected an ONNX model, got {reason}", where=where) from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        ins = self.session.get_inputs()
        self.inputs = [ev.TensorSpec(name=i.name, dtype=i.type, shape=_shape(i.shape)) for i in ins]
        self.outputs = [
            ev.TensorSpec(name=o.name, dtype=o.type, shape=_shape(o.shape))
            for o in self.session.get_outputs()
        ]
        for i in ins:
            if i.type not in _DTYPES:
                raise ModelRejected(
                    f"expected numeric ONNX inputs, got {i.type} for input {i.name!r}", where=where
                )
        given = [s.name for s in descriptor.inputs] if descriptor.inputs else []
        wide = len(ins) == 1 and len(ins[0].shape) == 2 and ins[0].shape[1] != 1
        if wide:
            names = json.loads(meta["feature_names"]) if "feature_names" in meta else given
            width = ins[0].shape[1]
            if not names or (isinstance(width, int) and len(names) != width):
                raise ModelRejected(
                    f"expected {width} feature names for ONNX input {ins[0].name!r} "
                    f"(metadata 'feature_names' or --features), got {names}",
                    where=where,
                )
            self.feature_names = tuple(names)
        else:
            self.feature_names = tuple(i.name for i in ins)
        self._wide = wide
        self._dtypes = [_DTYPES[i.type] for i in ins]
        self._matrix = FeatureMatrix(self.feature_names, descriptor.name)
        self._classes_meta = json.loads(meta["classes"]) if "classes" in meta else None
        self.kind, self.classes = self._kind()

    def _kind(self) -> tuple[Kind, tuple[str, ...]]:
        outs = self.session.get_outputs()
        types = [o.type for o in outs]
        if len(outs) == 2 and ("seq(map" in types[1] or types[1] == "tensor(float)"):
            if "seq(map" in types[1]:
                return "classification", ()  # classes come from the ZipMap keys
            classes = tuple(str(c) for c in self._classes_meta or ())
            return "classification", classes
        if len(outs) == 1 and types[0] in ("tensor(float)", "tensor(double)"):
            shape = outs[0].shape
            if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
                return "regression", ()
        return "other", ()

    def run(self, rows: Sequence[Mapping[str, ev.Feature]]) -> list[Any]:
        """The raw onnxruntime outputs for ``rows``."""
        if self._wide:
            # read straight into the input's type: a known layout is one cast from the bytes
            feeds = {self.inputs[0].name: self._matrix.matrix(rows, self._dtypes[0])}
        else:
            x = self._matrix.matrix(rows)
            feeds = {
                spec.name: x[:, i : i + 1]
                .astype(self._dtypes[i], copy=False)
                .reshape([len(rows), *([1] if len(spec.shape) == 2 else [])])
                for i, spec in enumerate(self.inputs)
            }
        result: list[Any] = self.session.run(None, feeds)
        return result

    def predict_batch(self, rows: Sequence[Mapping[str, ev.Feature]]) -> Sequence[ev.Output]:
        if not rows:
            return []
        raw = self.run(rows)
        if self.kind == "regression":
            return value_outputs(raw[0])
        if self.kind == "classification":
            labels, probs = raw
            if isinstance(probs, list):  # ZipMap: one dict per row
                classes = [str(k) for k in probs[0]]
                matrix = np.array([list(p.values()) for p in probs], dtype=np.float64)
                return label_outputs(classes, matrix, labels)
            classes = list(self.classes) or [str(c) for c in range(probs.shape[1])]
            # the label tensor stays an array: turned into strings only if a row is read
            return label_outputs(classes, np.asarray(probs, np.float64), labels)
        return [
            {o.name: np.asarray(v[i]).tolist() for o, v in zip(self.outputs, raw, strict=True)}
            for i in range(len(rows))
        ]


class OnnxFormat(ModelFormat):
    """``.onnx`` files."""

    name = "onnx"

    def detect(self, path: Path, head: bytes) -> bool:
        return path.is_file() and path.suffix.lower() == ".onnx"

    def load(self, payload: bytes, descriptor: ev.ModelDescriptor) -> OnnxModel:
        return OnnxModel(payload, descriptor, Settings.from_env())
