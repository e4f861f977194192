"""The model-format contract: turn a descriptor's payload into something that scores.

A :class:`ModelFormat` plugin knows one kind of artefact (ONNX, PMML, a skops file...):

- ``detect(path, head)``: whether a file or folder is of this format (``head`` is its first
  bytes, empty for a folder);
- ``pack(path)``: the payload bytes for a file or folder (folders as a deterministic tar);
- ``load(payload, descriptor)``: a :class:`LoadedModel`, or :class:`~eventml.errors.ModelRejected`
  with the reason. Loading never unpickles bytes from outside.

A :class:`LoadedModel` exposes its input schema read from the artefact, its feature names
(the record fields it reads, in column order) and ``predict_batch(rows)``, which scores a
list of feature dicts with one vectorized call and returns one canonical output per row:
``{"value": v}`` for regression, ``{"label": l, "probabilities": {class: p}}`` for
classification, otherwise the model's named outputs as lists.

Records map to inputs by name after :func:`normalize` (lower case, runs of anything but
letters and digits become one ``_``), so ``fixed_acidity``, ``Fixed Acidity`` and
``fixed acidity`` are the same feature.

Writing a new format plugin: subclass :class:`ModelFormat`, register it under a short
name in the ``eventml.formats`` entry-point group, and run ``tests/models/conformance.py``.
"""

from __future__ import annotations

import abc
import functools
import io
import operator
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from eventml import events as ev
from eventml.errors import SchemaMismatch, expected_got
from eventml.models._rows import EncodedRows, FloatMaps

Kind = Literal["regression", "classification", "other"]
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_BATCH_MIN = 16  # fewer rows: the row-by-row loop costs less than setting up the others
_UNSEEN: Any = object()


@functools.lru_cache(maxsize=4096)
def normalize(name: str) -> str:
    """The matching form of a feature name.

    >>> normalize("Fixed Acidity"), normalize("fixed_acidity"), normalize(" pH ")
    ('fixed_acidity', 'fixed_acidity', 'ph')
    """
    return _NON_ALNUM.sub("_", name.lower()).strip("_")


class LoadedModel(abc.ABC):
    """A model ready to score."""

    kind: Kind
    inputs: list[ev.TensorSpec]
    outputs: list[ev.TensorSpec]
    feature_names: tuple[str, ...]
    classes: tuple[str, ...] = ()

    @abc.abstractmethod
    def predict_batch(self, rows: Sequence[Mapping[str, ev.Feature]]) -> Sequence[ev.Output]:
        """One canonical output per row, computed with one vectorized call."""

    def close(self) -> None:  # noqa: B027  (most models hold nothing to release)
        """Release what the model holds (sessions, files)."""


class ModelFormat(abc.ABC):
    """A plugin for one artefact format."""

    name: str

    @abc.abstractmethod
    def detect(self, path: Path, head: bytes) -> bool:
        """Whether ``path`` (a file whose first bytes are ``head``, or a folder) is ours."""

    def pack(self, path: Path) -> bytes:
        """The payload for ``path``: a file's bytes, or a folder as a deterministic tar."""
        return path.read_bytes() if path.is_file() else pack_folder(path)

    @abc.abstractmethod
    def load(self, payload: bytes, descriptor: ev.ModelDescriptor) -> LoadedModel:
        """A scoring model, or :class:`~eventml.errors.ModelRejected` with the reason."""


def pack_folder(path: Path) -> bytes:
    """A folder as an uncompressed tar with sorted names and zeroed metadata (same bytes each time)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(p for p in path.rglob("*")):
            info = tar.gettarinfo(str(file), arcname=str(file.relative_to(path)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if file.is_dir() else 0o644
            if file.is_file():
                with file.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def unpack_folder(payload: bytes, into: Path) -> None:
    """Extract a packed folder; members that would escape ``into`` are refused (tar filter)."""
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
        tar.extractall(into, filter="data")


class FeatureMatrix:
    """Maps record features onto a model's input columns by normalized name."""

    def __init__(self, feature_names: Sequence[str], model: str) -> None:
        self.names = tuple(feature_names)
        self.model = model
        self._wanted = {normalize(n): i for i, n in enumerate(self.names)}
        self._layouts: dict[tuple[str, ...], list[str | None]] = {}
        self._getters: dict[tuple[str, ...], Callable[[Any], Any] | None] = {}
        self._maps = FloatMaps(self.names, key=normalize)

    def columns_for(self, row: Mapping[str, ev.Feature]) -> list[str | None]:
        """The record's field name for each input column (None where the record lacks it).

        Computed once per field layout (producers send the same fields each time).
        """
        layout = tuple(row)
        found = self._layouts.get(layout)
        if found is None:
            found = [None] * len(self.names)
            for field in row:
                i = self._wanted.get(normalize(field))
                if i is not None:
                    found[i] = field
            if len(self._layouts) < 256:
                self._layouts[layout] = found
        return found

    def matrix(self, rows: Sequence[Mapping[str, ev.Feature]], dtype: Any = np.float64) -> Any:
        """A ``[len(rows), len(names)]`` array; missing values (None) are NaN.

        Raises :class:`~eventml.errors.SchemaMismatch` naming the row and feature when a
        feature is absent or not a number. Batches whose rows share one all-float layout
        (:class:`EncodedRows` from the engine, or a list of dicts) are read in one compiled
        pass (:class:`~eventml.models._rows.FloatMaps`); other lists of rows of one layout
        with one ``itemgetter`` per row; anything else row by row. Every path gives the
        same numbers and errors: the faster ones hand any batch they cannot read exactly
        to the row-by-row loop.
        """
        if isinstance(rows, EncodedRows):
            encoded = self._maps.of_raws(rows.raws, dtype)
            if encoded is not None:
                return encoded
        elif len(rows) >= _BATCH_MIN and isinstance(rows, list):
            fast = self._maps.of_dicts(rows, dtype)
            if fast is None:
                fast = self._gather(rows)
            if fast is not None:
                return fast.astype(dtype, copy=False)
        return self._rows(rows).astype(dtype, copy=False)

    def _gather(self, rows: list[Mapping[str, ev.Feature]]) -> np.ndarray | None:
        """Rows with the first row's exact fields, each read by one ``itemgetter``; else None.

        Same fields (as a set) as the first row, which maps each column from exactly one
        field, means the same mapping for every row whatever their order. numpy converts
        the tuples value by value as it does a row's list in :meth:`_rows`.
        """
        first = rows[0]
        if not isinstance(first, Mapping):
            return None
        keys = tuple(first)
        getter = self._getters.get(keys, _UNSEEN)
        if getter is _UNSEEN:
            getter = self._getter(first)
            if len(self._getters) < 256:
                self._getters[keys] = getter
        if getter is None:
            return None
        n, k = len(rows), len(self.names)
        fields = first.keys()
        try:
            if not all(fields == row.keys() for row in rows):
                return None
            out: np.ndarray = np.array(list(map(getter, rows)), dtype=np.float64)
        except (TypeError, ValueError, AttributeError, KeyError):
            return None  # the row-by-row loop says which row and feature
        if out.shape != ((n, k) if k > 1 else (n,)):  # a value was itself a sequence
            return None
        return out.reshape(n, k)

    def _getter(self, row: Mapping[str, ev.Feature]) -> Callable[[Any], Any] | None:
        """An itemgetter of the row's fields in column order; None if any column lacks a
        field or has several (then the last in the row's own order wins, row by row)."""
        fields = self.columns_for(row)
        if not fields:
            return None
        counts = Counter(self._wanted.get(normalize(f)) for f in row)
        if any(f is None for f in fields) or any(counts[i] != 1 for i in range(len(fields))):
            return None
        return operator.itemgetter(*fields)

    def _rows(self, rows: Sequence[Mapping[str, ev.Feature]]) -> np.ndarray:
        out = np.empty((len(rows), len(self.names)), dtype=np.float64)
        layout: tuple[str, ...] | None = None
        fields: list[str | None] = []
        for r, row in enumerate(rows):
            keys = tuple(row)
            if keys != layout:  # records of one producer share a layout: map it once
                layout, fields = keys, self.columns_for(row)
                absent = [self.names[i] for i, f in enumerate(fields) if f is None]
                if absent:
                    raise SchemaMismatch(
                        f"expected features {absent} for model {self.model!r}, "
                        f"got fields {sorted(row)}",
                        where=f"row {r}",
                        row=r,
                    )
            try:
                out[r] = [row[f] for f in fields]  # type: ignore[index]
            except (TypeError, ValueError):
                raise self._bad_value(row, fields, r) from None
        return out

    def _bad_value(
        self, row: Mapping[str, ev.Feature], fields: list[str | None], r: int
    ) -> SchemaMismatch:
        for name, f in zip(self.names, fields, strict=True):
            value = row[f] if f is not None else None
            if not (value is None or isinstance(value, int | float)) or isinstance(value, bool):
                return SchemaMismatch(
                    expected_got(f"a number for feature {name!r}", value), where=f"row {r}", row=r
                )
        return SchemaMismatch(f"expected numbers for {list(self.names)}", where=f"row {r}", row=r)


def check_rows(rows: Sequence[Mapping[str, ev.Feature]]) -> None:
    """Nothing to score is not an error, but rows must be mappings."""
    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise SchemaMismatch(
                expected_got("a mapping of features", row), where=f"row {r}", row=r
            )


class Outputs(Sequence[ev.Output]):
    """Canonical outputs of a batch, kept in columns; a row's dict is built when it is read.

    Building a dict per row up front cost more than the model itself on small models, and
    many callers (metrics, replay) only need the columns. Equal to a list of the same dicts.
    """

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> ev.Output: ...
    @overload
    def __getitem__(self, i: slice) -> list[ev.Output]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._row(i % self._n)

    def _row(self, i: int) -> ev.Output:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


class ClassOutputs(Outputs):
    """``{"label": l, "probabilities": {class: p}}`` per row, from labels and a matrix.

    ``labels`` are the label strings, from the model's raw label values (``raw_labels``,
    e.g. onnxruntime's int64 tensor) or, without them, the argmax of ``probabilities``;
    they are made the first time someone reads them: the engine's encoder and the metrics
    often never do.
    """

    def __init__(
        self,
        names: list[str],
        probabilities: np.ndarray,
        raw_labels: Sequence[Any] | np.ndarray | None = None,
    ) -> None:
        super().__init__(len(raw_labels) if raw_labels is not None else len(probabilities))
        self.names = names
        self.probabilities = probabilities
        self._labels: list[str] | None = None
        self._raw = raw_labels
        self._rows: list[list[float]] | None = None

    @property
    def labels(self) -> list[str]:
        """One label string per row."""
        if self._labels is None:
            if self._raw is None:
                names = self.names
                chosen = [names[i] for i in np.argmax(self.probabilities, axis=1).tolist()]
            else:
                raw = self._raw.tolist() if isinstance(self._raw, np.ndarray) else self._raw
                chosen = [v if type(v) is str else str(v) for v in raw]  # numpy.str_ is a str too
            self._labels = chosen
        return self._labels

    def label_codes(self) -> tuple[list[str], np.ndarray]:
        """The distinct label strings and each row's index into them (``labels`` is
        ``[distinct[c] for c in codes]``), without a string per row when the labels are
        still the model's array or the argmax."""
        if self._labels is None and self._raw is None:
            return list(self.names), np.argmax(self.probabilities, axis=1)
        if (
            self._labels is None
            and isinstance(self._raw, np.ndarray)
            and self._raw.dtype.kind in "iub"
        ):
            distinct, codes = np.unique(self._raw.reshape(-1), return_inverse=True)
            return [str(v) for v in distinct.tolist()], codes.reshape(-1)
        index: dict[str, int] = {}
        codes = np.fromiter((index.setdefault(v, len(index)) for v in self.labels), np.intp)
        return list(index), codes

    def _row(self, i: int) -> ev.Output:
        if self._rows is None:
            self._rows = self.probabilities.tolist()
        return {
            "label": self.labels[i],
            "probabilities": dict(zip(self.names, self._rows[i], strict=True)),
        }

    def __iter__(self) -> Iterator[ev.Output]:
        rows = self.probabilities.tolist()
        names = self.names
        return (
            {"label": label, "probabilities": dict(zip(names, row, strict=True))}
            for label, row in zip(self.labels, rows, strict=True)
        )


class ValueOutputs(Outputs):
    """``{"value": v}`` per row."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64).reshape(-1)
        super().__init__(len(self.values))
        self._list: list[float] | None = None

    def _row(self, i: int) -> ev.Output:
        if self._list is None:
            self._list = self.values.tolist()
        return {"value": self._list[i]}

    def __iter__(self) -> Iterator[ev.Output]:
        return ({"value": v} for v in self.values.tolist())


def label_outputs(
    classes: Sequence[str],
    probabilities: np.ndarray,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> ClassOutputs:
    """Classification outputs: the label (argmax unless given) and every class's probability.

    Labels given as other values than strings (or as an array) become ``str(value)``.
    """
    names = [str(c) for c in classes]
    return ClassOutputs(names, np.asarray(probabilities, dtype=np.float64), raw_labels=labels)


def value_outputs(values: np.ndarray) -> ValueOutputs:
    """Regression outputs ``{"value": v}``."""
    return ValueOutputs(values)
