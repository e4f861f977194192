"""TensorFlow models, scored by TensorFlow itself (imported on first load, not with eventml).

Artefacts:

- a SavedModel folder (``saved_model.pb`` plus ``variables/``), given directly or as a
  TensorFlow Serving base folder of numeric versions (``wine_savedmodel/1/``), of which the
  highest version is packed, as TF Serving would serve it. The payload is that folder as a
  deterministic tar. Scoring uses the ``serving_default`` signature, else the only one
  (``predict`` in TF1 exports); a model with several and no default is rejected.
- a TF1 frozen ``GraphDef`` (``.pb`` whose first field is a node). Its inputs are the
  ``Placeholder`` nodes, its outputs the nodes no other node consumes, named by node name
  (``dense_3/Sigmoid``).

Inputs: one 2-D tensor ``[N, k]`` whose columns are the descriptor's ``inputs`` (``models
push --features a,b,...``), or one ``[N]`` / ``[N, 1]`` tensor per feature, named by it. A
single input of unknown shape (frozen graphs often drop it) is fed ``[N, k]``, ``k`` the
number of ``--features``.
Outputs: a single float output of one column is regression (``{"value": v}``); anything
else, such as nine independent sigmoids, is returned as named lists
(``{"dense_3/Sigmoid": [p0, ..., p8]}``) because nothing in a TF graph says whether scores
are one probability distribution.

TensorFlow runs with ``Settings.threads`` intra-op threads and one inter-op thread, fixed
when it first initializes. TensorFlow models are programs (TensorFlow's SECURITY.md): the
graph a model scores with is refused if it holds an op that reads or writes files, runs
Python or prints (:data:`DENIED_OPS`), but only push models you trust.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import ModelError, ModelRejected, PluginError
from eventml.models.base import (
    FeatureMatrix,
    Kind,
    LoadedModel,
    ModelFormat,
    check_rows,
    pack_folder,
    unpack_folder,
    value_outputs,
)

DENIED_OPS = re.compile(
    r"File|Save|Restore|Checkpoint|PyFunc|Print|Summary|Reader|Dataset|Debug|ImmutableConst"
)
"""Op types a scoring graph has no business running (file access, Python, logging)."""

_NUMERIC = ("float16", "float32", "float64", "int32", "int64")
_NOT_OUTPUTS = frozenset({"Const", "NoOp", "Placeholder", "PlaceholderWithDefault"})


def _tf(settings: Settings) -> Any:
    """The ``tensorflow`` module, thread pools set on first import."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise PluginError(
            f"tensorflow models need tensorflow ({exc}); "
            "install it with: pip install 'eventml[tensorflow]'"
        ) from exc
    threading = tf.config.threading
    with contextlib.suppress(RuntimeError):  # already initialized: its pools stay as they are
        if threading.get_intra_op_parallelism_threads() != settings.threads:
            threading.set_intra_op_parallelism_threads(settings.threads)
        if threading.get_inter_op_parallelism_threads() != 1:
            threading.set_inter_op_parallelism_threads(1)
    return tf


@contextlib.contextmanager
def _quiet_tf_logger(tf: Any) -> Iterator[None]:
    """Hide TF1 loading chatter (reference variables cannot become Python objects)."""
    logger: logging.Logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def saved_model_dir(path: Path) -> Path | None:
    """The SavedModel folder ``path`` is, or its highest numeric version subfolder."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = [
        p
        for p in path.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
    ]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _spec(name: str, dtype: Any, shape: Any) -> ev.TensorSpec:
    dims = shape.as_list() if shape.rank is not None else []
    return ev.TensorSpec(name=name, dtype=dtype.name, shape=[-1 if d is None else d for d in dims])


def _ops(graph_def: Any) -> set[str]:
    ops = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        ops |= {n.op for n in fn.node_def}
    return ops


def _check_ops(graph_def: Any, where: str) -> None:
    denied = sorted(op for op in _ops(graph_def) if DENIED_OPS.search(op))
    if denied:
        raise ModelRejected(f"expected a graph that only computes, got ops {denied}", where=where)


class _Graph:
    """A callable TF function with named inputs and outputs (arrays in, arrays out)."""

    def __init__(
        self, fn: Any, inputs: list[ev.TensorSpec], outputs: list[ev.TensorSpec], by_keyword: bool
    ) -> None:
        self.fn = fn
        self.inputs = inputs
        self.outputs = outputs
        self.by_keyword = by_keyword

    def __call__(self, tf: Any, feeds: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [tf.constant(x) for x in feeds]
        if self.by_keyword:
            named = self.fn(**{s.name: t for s, t in zip(self.inputs, tensors, strict=True)})
            return [named[s.name].numpy() for s in self.outputs]
        return [t.numpy() for t in self.fn(*tensors)]


def _load_saved_model(tf: Any, folder: Path, where: str) -> tuple[Any, _Graph]:
    try:
        with _quiet_tf_logger(tf):
            loaded = tf.saved_model.load(str(folder), tags=["serve"])
    except Exception as exc:  # TF raises its own error tree (NotFoundError, ValueError...)
        raise ModelRejected(
            f"expected a SavedModel with tag 'serve', got {exc}", where=where
        ) from exc
    signatures = dict(loaded.signatures)
    if "serving_default" in signatures:
        fn = signatures["serving_default"]
    elif len(signatures) == 1:
        fn = next(iter(signatures.values()))
    else:
        raise ModelRejected(
            f"expected a 'serving_default' signature or exactly one, got {sorted(signatures)}",
            where=where,
        )
    _check_ops(fn.graph.as_graph_def(), where)
    specs = fn.structured_input_signature[1]
    inputs = [_spec(k, s.dtype, s.shape) for k, s in sorted(specs.items())]
    outputs = [_spec(k, t.dtype, t.shape) for k, t in sorted(fn.structured_outputs.items())]
    return loaded, _Graph(fn, inputs, outputs, by_keyword=True)


def _load_graph_def(tf: Any, payload: bytes, where: str) -> _Graph:
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(payload)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise ModelRejected(
            f"expected a frozen TensorFlow GraphDef, got {exc}", where=where
        ) from exc
    nodes = list(graph_def.node)
    placeholders = [n for n in nodes if n.op == "Placeholder"]
    consumed = {i.lstrip("^").split(":")[0] for n in nodes for i in n.input}
    sinks = [n for n in nodes if n.name not in consumed and n.op not in _NOT_OUTPUTS]
    if not placeholders or not sinks:
        raise ModelRejected(
            f"expected a GraphDef with Placeholder inputs and outputs, got {len(nodes)} nodes",
            where=where,
        )
    _check_ops(graph_def, where)

    def imported() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    try:
        wrapped = tf.compat.v1.wrap_function(imported, [])
        fn = wrapped.prune([f"{n.name}:0" for n in placeholders], [f"{n.name}:0" for n in sinks])
    except Exception as exc:  # unknown ops, bad attributes: TF raises ValueError and its own
        raise ModelRejected(f"expected an importable GraphDef, got {exc}", where=where) from exc
    inputs = [
        _spec(n.name, tf.as_dtype(n.attr["dtype"].type), tf.TensorShape(n.attr["shape"].shape))
        for n in placeholders
    ]
    outputs = [_spec(n.name, t.dtype, t.shape) for n, t in zip(sinks, fn.outputs, strict=True)]
    return _Graph(fn, inputs, outputs, by_keyword=False)


class TensorflowModel(LoadedModel):
    """A SavedModel signature or a frozen graph, with the feature mapping."""

    def __init__(self, payload: bytes, descriptor: ev.ModelDescriptor, settings: Settings) -> None:
        where = self._where = f"model {descriptor.name}"
        self._tf = _tf(settings)
        self._loaded: Any = None
        if payload[257:262] == b"ustar":  # a packed SavedModel folder
            # Variables and assets are read while loading: the files are not needed after.
            with tempfile.TemporaryDirectory(prefix="eventml-tf-") as tmp:
                root = Path(tmp)
                try:
                    unpack_folder(payload, root)
                except Exception as exc:  # tarfile errors, members refused by the data filter
                    raise ModelRejected(
                        f"expected a SavedModel folder, got {exc}", where=where
                    ) from exc
                folder = saved_model_dir(root) or root
                self._loaded, self.graph = _load_saved_model(self._tf, folder, where)
        else:
            self.graph = _load_graph_def(self._tf, payload, where)
        self.inputs, self.outputs = self.graph.inputs, self.graph.outputs
        for spec in self.inputs:
            if spec.dtype not in _NUMERIC:
                raise ModelRejected(
                    f"expected numeric inputs, got {spec.dtype} for input {spec.name!r}",
                    where=where,
                )
        self.feature_names = self._features(descriptor, where)
        self._matrix = FeatureMatrix(self.feature_names, descriptor.name)
        self.kind = self._kind()

    def _features(self, descriptor: ev.ModelDescriptor, where: str) -> tuple[str, ...]:
        first, given = self.inputs[0], [s.name for s in descriptor.inputs]
        unknown = len(self.inputs) == 1 and not first.shape  # a frozen graph may not say
        if unknown:  # fed as [N, k], k = the number of --features
            if not given:
                raise ModelRejected(
                    f"expected feature names for input {first.name!r} of unknown shape "
                    "(--features), got none",
                    where=where,
                )
            first = msgspec.structs.replace(first, shape=[-1, len(given)])
            self.inputs = [first]
        two_d = len(first.shape) == 2
        self._wide = len(self.inputs) == 1 and two_d and (unknown or first.shape[1] != 1)
        if not self._wide:
            return tuple(s.name for s in self.inputs)
        width = first.shape[1]
        if not given or (width != -1 and len(given) != width):
            raise ModelRejected(
                f"expected {width} feature names for input {first.name!r} (--features), "
                f"got {given}",
                where=where,
            )
        return tuple(given)

    def _kind(self) -> Kind:
        if len(self.outputs) == 1 and self.outputs[0].dtype.startswith("float"):
            shape = self.outputs[0].shape
            if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
                return "regression"
        return "other"

    def run(self, rows: Sequence[Mapping[str, ev.Feature]]) -> list[np.ndarray]:
        """The raw output arrays for ``rows``, in :attr:`outputs` order."""
        x = self._matrix.matrix(rows)
        if self._wide:
            feeds = [x.astype(self.inputs[0].dtype, copy=False)]
        else:
            feeds = [
                x[:, i].astype(s.dtype).reshape([len(rows), *([1] if len(s.shape) == 2 else [])])
                for i, s in enumerate(self.inputs)
            ]
        try:
            return self.graph(self._tf, feeds)
        except self._tf.errors.OpError as exc:  # the graph refused the batch (shape, values)
            raise ModelError(
                f"expected the graph to score {len(rows)} rows, got {exc.message}",
                where=self._where,
            ) from exc

    def predict_batch(self, rows: Sequence[Mapping[str, ev.Feature]]) -> Sequence[ev.Output]:
        if not rows:
            return []
        check_rows(rows)
        raw = self.run(rows)
        if self.kind == "regression":
            return value_outputs(raw[0])
        columns = [(s.name, np.asarray(v).tolist()) for s, v in zip(self.outputs, raw, strict=True)]
        return [{name: values[i] for name, values in columns} for i in range(len(rows))]

    def close(self) -> None:
        self._loaded = None


class TensorflowFormat(ModelFormat):
    """SavedModel folders and TF1 frozen ``GraphDef`` ``.pb`` files."""

    name = "tensorflow"

    def detect(self, path: Path, head: bytes) -> bool:
        if path.is_dir():
            return saved_model_dir(path) is not None
        # A GraphDef starts with its first node (field 1, tag 0x0a); a SavedModel's
        # saved_model.pb with its schema version (field 1 varint, 0x08).
        return path.suffix.lower() == ".pb" and head[:1] == b"\x0a"

    def pack(self, path: Path) -> bytes:
        if path.is_file():
            return path.read_bytes()
        return pack_folder(saved_model_dir(path) or path)

    def load(self, payload: bytes, descriptor: ev.ModelDescriptor) -> TensorflowModel:
        return TensorflowModel(payload, descriptor, Settings.from_env())
