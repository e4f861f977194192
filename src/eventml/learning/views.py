"""Training views: prediction events joined with their latest labels, folded from the log.

A view is a table with one row per prediction event of an endpoint (DESIGN §7):

- ``record_id, endpoint, key, ts, status, model, version``: from the prediction event
  (``ts`` is the record's event time, the time the filters and the split use);
- ``output`` (JSON text), ``served_label``, ``served_value``: what was served;
- ``features`` (JSON text of the event's ``features``, exactly as the models saw them) and
  one column ``feature.NAME`` per feature (float64 when every value is a number or missing);
- ``label`` (the class name: ints and integral floats as ``"1"``, booleans as
  ``"true"``/``"false"``), ``label_value`` (float64, null when not a number),
  ``label_json`` and ``label_ts``: the latest label of the prediction (see
  :mod:`eventml.learning.labels`);
- ``split``: ``train`` or ``validation``, by time: the latest ``validation`` fraction of
  rows (or rows at or after ``split_at``) are held out; rows sharing the cutoff time are
  all held out.

Rows are ordered by ``(ts, record_id, log position)``. The content hash is the sha256 of
the JSON array ``[columns, rows]`` of the hashed columns (:data:`HASHED`; times as
integer microseconds since the epoch) in that order, so the same events give the same
hash and any changed label, feature or filter gives another.

Decoded events are loaded into Arrow tables and joined in DuckDB (extension autoinstall
and autoload off: no network). The fold decodes only the fields a view reads (slim
msgspec Structs; the features stay MessagePack bytes until a column needs them), and
feature maps sharing one all-float layout become float columns straight from their bytes
(:func:`_float_grid`). :func:`replay_view` is the same fold without the JSON text columns
and the hash, which replay does not read; it keeps served probabilities as float columns.

Stored folds (a materialized view, kept up to date): with the embedded log, the decoded
events (one row per prediction of an endpoint, one per label, and the ids, entities and
times of every prediction that labels are checked against) are kept as Arrow IPC files
in ``<log file>.views/`` with the end offsets they cover, and the next view only decodes
the events appended since and stores them as one more segment (:class:`_Store`). They
hold decoded events, never joined rows: every view joins the labels again, so a newer
label always changes its rows. Deleting the folder is always safe (the next view folds
the log from the start); other logs fold from the start every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import operator
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventml import events as ev
from eventml.errors import InputError, expected_got
from eventml.learning.labels import TOPIC as LABELS
from eventml.log import Batch, Log

LOGGER = logging.getLogger("eventml.learning.views")
PREDICTIONS = "predictions"
FEATURE_PREFIX = "feature."
SERVED_PROBA = "served_proba."
"""Prefix of :func:`replay_view`'s float columns: the served probability of each class."""
HASHED = (
    "record_id", "endpoint", "key", "ts", "status", "model", "version", "output", "features",
    "label_json", "label_ts", "split",
)  # fmt: skip
TIMESTAMP = pa.timestamp("us", tz="UTC")  # every time column of views and folds
_SELECTED = (
    "pos",
    "part",
    "off",
    "record_id",
    "endpoint",
    "key",
    "ts",
    "model",
    "version",
    "status",
)
_GRID_ROWS = 65_536  # rows per numpy pass over feature bytes: bounded memory, same result


class ViewSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Which rows a view holds; every field is a filter or a sampling option."""

    endpoint: str
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    """``NAME`` or ``NAME:VERSION`` of the model that answered."""
    status: str | None = None
    labelled: bool = True
    """Only predictions with a label (a training view); False keeps every prediction (replay)."""
    sample: float | None = None
    stratify: bool = False
    seed: int = 0
    validation: float = 0.2
    split_at: datetime | None = None


@dataclass
class View:
    """A built view: the table, its feature names and (computed on first use) its content hash.

    ``feature_bytes``: each row's features as the log holds them (a binary column of
    MessagePack maps), for a view folded from the log (None for one read from a file);
    ``positions`` likewise.
    """

    table: pa.Table
    features: list[str]
    spec: ViewSpec | None = None
    cutoff: datetime | None = None
    labels: dict[str, int] = field(default_factory=dict)
    feature_bytes: pa.ChunkedArray | None = field(default=None, repr=False)
    positions: pa.ChunkedArray | None = field(default=None, repr=False)
    """Each row's place in the endpoint's :class:`PredictionFold` (a view folded from the log)."""
    _hash: str | None = field(default=None, init=False, repr=False)

    @property
    def hash(self) -> str:
        """The content hash (module docstring); hashing every row is paid only when asked."""
        if self._hash is None:
            self._hash = view_hash(self.table)
        return self._hash

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def split(self, name: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table["split"], name))


class _Pred(msgspec.Struct, frozen=True, tag="Prediction", gc=False):
    """The fields of a prediction a view reads (msgspec skips the others)."""

    record_id: str
    endpoint: str
    ts: ev.UtcTime
    status: str
    features: msgspec.Raw
    key: str | None = None
    model: str | None = None
    version: int | None = None
    output: msgspec.Raw = msgspec.Raw(b"\xc0")  # MessagePack nil when absent


class _Label(msgspec.Struct, frozen=True, tag="Label", gc=False):
    """The fields of a label a view reads (``source`` is skipped)."""

    value: float | int | str | bool
    ts: ev.UtcTime
    record_id: str | None = None
    endpoint: str | None = None
    key: str | None = None
    window_start: ev.UtcTime | None = None
    window_end: ev.UtcTime | None = None


_read_preds = msgspec.msgpack.Decoder(list[_Pred]).decode
_read_labels = msgspec.msgpack.Decoder(list[_Label]).decode
_read_feature_rows = msgspec.msgpack.Decoder(list[dict[str, ev.Feature]]).decode
_read_float_rows = msgspec.msgpack.Decoder(list[dict[str, float | None]]).decode
_read_outputs = msgspec.msgpack.Decoder(list[dict[str, Any] | None]).decode
_json = msgspec.json.Encoder()
_PRED_FIELDS = ("record_id", "key", "ts", "status", "model", "version", "features", "output")
_LABEL_FIELDS = ("record_id", "endpoint", "key", "window_start", "window_end", "value", "ts")


def _columns(items: Sequence[Any], names: Sequence[str], into: dict[str, list[Any]]) -> None:
    """Append each field of ``items`` to its column list.

    One C-level pass per field, and no tuple per item: tuples are tracked by the cycle
    collector, and hundreds of thousands of them make it run full collections.
    """
    for name in names:
        into[name].extend(map(operator.attrgetter(name), items))


def class_name(value: object) -> str:
    """The class a label value names.

    >>> class_name(1), class_name(1.0), class_name(0.5), class_name(True), class_name("yes")
    ('1', '1', '0.5', 'true', 'yes')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _name(value: object) -> tuple[str, float | None, str]:
    """A label value's ``label``, ``label_value`` and ``label_json``."""
    return class_name(value), _number(value), _json.encode(value).decode()


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


_FOLD_FORMAT = 1  # bump when a stored fold's columns change: older files are folded again


def _folder(log: Log) -> Path | None:
    """Where folds are kept: beside an embedded log's file (``path``); None for other logs."""
    path = getattr(log, "path", None)
    return path.with_name(path.name + ".views") if isinstance(path, Path) else None


def _mark(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _ends(log: Log, topic: str) -> list[int]:
    return log.end_offsets(topic) if topic in log.topics() else []


def _batches(log: Log, topic: str, starts: Sequence[int], ends: Sequence[int]) -> Iterator[Batch]:
    """The entries of ``topic`` from ``starts[p]`` to ``ends[p]`` of each partition, in chunks."""
    for partition, end in enumerate(ends):
        pos = starts[partition] if partition < len(starts) else 0
        while pos < end:
            batch = log.read(topic, partition, pos, end, limit=10_000)
            if not batch.offsets:
                break
            yield batch
            pos = batch.next_offset


_SEGMENTS = 8  # segments a stored fold grows by before it is written whole again


class _Store:
    """A fold's table of decoded events kept beside the embedded log, with the offsets it covers.

    The table holds one row per event and nothing joined, so bringing it up to date is
    appending the rows of the events appended since: a newer label is a new row of the
    labels fold, and every view joins labels again. On disk it is a chain: a base file
    ``NAME.arrow``, then segments, each holding the events from where the file before it
    ended to its own ends and named by where it starts (``NAME+DIGEST.arrow``), so the
    next one is found from the previous one's ends. An update writes one segment with the
    new events; the update after :data:`_SEGMENTS` segments writes the whole fold as the
    base again and removes the segments. Rewriting the whole fold each time would cost its
    write, and the process holding the replaced file mapped would pay for the kernel
    dropping its pages when it lets go (0.1 s for 70 MB here).

    A file is used only when the log still holds, at the last offset it covers in each
    partition, the very bytes it folded (a sha256), so a log replaced by another at the
    same path is folded from scratch; a missing or unusable segment ends the chain there
    (the rest is folded from the log). Each file is written to a temporary file and
    renamed: a reader sees a whole file or none.
    """

    def __init__(self, log: Log, topic: str, name: str) -> None:
        self.log, self.topic, self.name = log, topic, name
        self.folder = _folder(log)
        self.table: pa.Table | None = None
        self.ends: list[int] = []
        self.meta: dict[str, Any] = {}
        self.files = 0
        if self.folder is not None and self._base().is_file():
            try:
                self._load()
            except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
                self.table, self.ends, self.meta, self.files = None, [], {}, 0  # fold again

    def _base(self) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.name}.arrow"

    def _segment(self, starts: list[int]) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.name}+{_mark(_json.encode(starts))[:16]}.arrow"

    def _load(self) -> None:
        have = self.log.end_offsets(self.topic) if self.topic in self.log.topics() else []
        found = self._read(self._base(), have)
        if found is None:
            return
        tables, meta = [found[0]], found[1]
        while len(tables) <= _SEGMENTS:
            path = self._segment(meta["ends"])
            try:
                more = self._read(path, have) if path.is_file() else None
            except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
                more = None
            if more is None or more[1]["starts"] != meta["ends"]:
                break
            if more[1].get("floats") != meta.get("floats"):
                break
            tables.append(more[0])
            meta = more[1]
        table = (
            tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        )
        self.table, self.ends, self.meta, self.files = table, meta["ends"], meta, len(tables)

    def _read(self, path: Path, have: list[int]) -> tuple[pa.Table, dict[str, Any]] | None:
        """One file's table and metadata, None unless the log (whose end offsets are
        ``have``) still holds what it folded."""
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        meta = msgspec.json.decode((table.schema.metadata or {})[b"eventml.fold"])
        if meta["format"] != _FOLD_FORMAT:
            return None
        ends: list[int] = meta["ends"]
        if len(ends) > len(have) or any(e > h for e, h in zip(ends, have, strict=False)):
            return None
        for partition, (end, mark) in enumerate(zip(ends, meta["marks"], strict=True)):
            if end and _mark(self.log.read(self.topic, partition, end - 1, end).values[0]) != mark:
                return None
        return table.replace_schema_metadata(None), meta

    def update(self, fold: Callable[[Iterator[Batch]], pa.Table]) -> pa.Table:
        """The stored table with ``fold`` of the events appended since, kept; ``ends`` are
        then the offsets it covers."""
        ends = _ends(self.log, self.topic)
        new = fold(_batches(self.log, self.topic, self.ends, ends))
        table = new if self.table is None else pa.concat_tables([self.table, new])
        if new.num_rows or self.table is None:
            self.keep(table, new if self.table is not None else None, {}, ends)
        self.ends = ends
        return table

    def keep(
        self, table: pa.Table, new: pa.Table | None, meta: dict[str, Any], ends: list[int]
    ) -> None:
        """Keep ``table``, the fold of every event before ``ends``, whose last rows ``new``
        are the events after the stored fold (None: ``table`` is folded anew)."""
        if self.folder is None:
            return
        whole = new is None or self.table is None or self.files > _SEGMENTS
        path = self._base() if whole else self._segment(self.ends)
        if not whole:
            meta = {**meta, "starts": self.ends}
        marks = [
            _mark(self.log.read(self.topic, p, e - 1, e).values[0]) if e else ""
            for p, e in enumerate(ends)
        ]
        meta = {**meta, "format": _FOLD_FORMAT, "ends": ends, "marks": marks}
        # two threads (label requests) may keep the same file at once: a name of their own
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        rows = table if whole or new is None else new
        rows = rows.replace_schema_metadata({b"eventml.fold": _json.encode(meta)})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
                writer.write_table(rows)
            os.replace(tmp, path)
            if whole:
                for old in self.folder.glob(f"{self.name}+*.arrow"):
                    old.unlink(missing_ok=True)
                for left in self.folder.glob(f"{self.name}*.tmp"):
                    if not _alive(left.name.rsplit(".", 2)[-2].partition("-")[0]):
                        left.unlink(missing_ok=True)  # a killed process's unfinished file
        except (OSError, pa.ArrowException) as exc:  # a cache: the view itself is complete
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            LOGGER.warning("could not keep the fold in %s: %s", path, exc)


def _alive(pid: str) -> bool:
    """Whether the process ``pid`` (a temporary file's writer) may still be writing."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


class PredictionFold:
    """The predictions of one endpoint: ``pos`` (row), ``part`` and ``off`` (log position).

    Columns: the event's fields, its ``features`` and ``output`` as MessagePack (binary),
    and what each event gives on its own: ``served_label``, ``served_value``,
    ``served_proba.CLASS`` and, while every feature map of the endpoint shares one
    all-float layout (``floats``: the names), the ``feature.NAME`` columns. An embedded
    log keeps the table (:class:`_Store`); it is brought up to date, not folded again.
    ``keep=False`` leaves storing it to :meth:`keep`, for a caller with other work to
    overlap the write with (replay).
    """

    def __init__(
        self,
        log: Log,
        endpoint: str,
        progress: Callable[[int], None] | None = None,
        *,
        keep: bool = True,
    ) -> None:
        name = "predictions-" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        store = _Store(log, PREDICTIONS, name)
        ends = _ends(log, PREDICTIONS)
        batches = _batches(log, PREDICTIONS, store.ends, ends)
        new, floats = _fold_predictions(batches, endpoint, progress)
        table = store.table
        appended: pa.Table | None = new  # the rows after the stored fold, None if folded anew
        if table is None or table.num_rows == 0:
            table, appended = new, None
        elif new.num_rows:
            if store.meta.get("floats") != floats:  # another layout: features read per view
                drop = [c for c in new.column_names if c.startswith(FEATURE_PREFIX)]
                new = new.drop_columns(drop)
                table = table.drop_columns(
                    [c for c in table.column_names if c.startswith(FEATURE_PREFIX)]
                )
                floats, appended = None, None
            table = pa.concat_tables([table, new], promote_options="default")
        else:
            floats = store.meta.get("floats")
        self._unsaved = (
            (store, table, appended, floats, ends) if new.num_rows or store.table is None else None
        )
        self.floats: list[str] | None = floats
        self.table = table.append_column("pos", pa.array(np.arange(table.num_rows)))
        if keep:
            self.keep()

    def keep(self) -> None:
        """Store the fold (once) if it took in new events."""
        if self._unsaved is not None:
            store, table, appended, floats, ends = self._unsaved
            self._unsaved = None
            store.keep(table, appended, {"floats": floats}, ends)

    def window(self, spec: ViewSpec) -> np.ndarray | None:
        """Where the rows of a view with ``labelled=False`` and only time filters sit in
        the fold, in fold order (such a view holds each of them once, reordered); None
        for a view that other filters or the labels narrow."""
        if spec.labelled or spec.model is not None or spec.status is not None:
            return None
        if spec.sample is not None:
            return None
        if any(t is not None and t.tzinfo is None for t in (spec.since, spec.until)):
            return None  # DuckDB reads a naive time in its session's zone: leave it the view
        inside = np.ones(self.table.num_rows, dtype=bool)
        ts = self.table["ts"]
        if spec.since is not None:
            inside &= pc.greater_equal(ts, pa.scalar(spec.since, TIMESTAMP)).to_numpy(
                zero_copy_only=False
            )
        if spec.until is not None:
            inside &= pc.less(ts, pa.scalar(spec.until, TIMESTAMP)).to_numpy(zero_copy_only=False)
        return np.flatnonzero(inside)


def _binary(raws: Sequence[msgspec.Raw]) -> pa.Array:
    """MessagePack values as one Arrow binary array (one join, no object per value)."""
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, raws), np.int64, len(raws)), out=offsets[1:])
    data = pa.py_buffer(b"".join(raws))
    return pa.Array.from_buffers(pa.large_binary(), len(raws), [None, pa.py_buffer(offsets), data])


def _fold_predictions(
    batches: Iterator[Batch], endpoint: str, progress: Callable[[int], None] | None
) -> tuple[pa.Table, list[str] | None]:
    """The :class:`PredictionFold` rows of the predictions in ``batches`` and the names of
    the float features."""
    cols: dict[str, list[Any]] = {name: [] for name in _PRED_FIELDS}
    parts: list[int] = []
    offsets: list[int] = []
    read = 0
    for batch in batches:
        preds = _read_preds(_msgpack_array(batch.values))
        if any(p.endpoint != endpoint for p in preds):
            keep = [i for i, p in enumerate(preds) if p.endpoint == endpoint]
            preds = [preds[i] for i in keep]
            offsets.extend(batch.offsets[i] for i in keep)
        else:
            offsets.extend(batch.offsets)
        parts.extend([batch.partition] * len(preds))
        _columns(preds, _PRED_FIELDS, cols)
        read += len(batch.values)
        if progress:
            progress(read)
    n = len(parts)
    record_id, key, ts, status, model, version, features, outputs = cols.values()
    decoded: list[dict[str, Any] | None] = _read_outputs(_msgpack_array(outputs))
    columns: dict[str, Any] = {
        "part": pa.array(parts, pa.int64()),
        "off": pa.array(offsets, pa.int64()),
        "record_id": pa.array(record_id, pa.string()),
        "endpoint": pa.array(np.full(n, endpoint, dtype=object), pa.string()),
        "key": pa.array(key, pa.string()),
        "ts": pa.array(ts, TIMESTAMP),
        "status": pa.array(status, pa.string()),
        "model": pa.array(model, pa.string()),
        "version": pa.array(version, pa.int64()),
        "features": _binary(features),
        "output": _binary(outputs),
        **_served(decoded),
    }
    grid = _float_grid(features)
    if grid is not None:
        for i, name in enumerate(grid[0]):
            columns[FEATURE_PREFIX + name] = pa.array(grid[1][i])
    return pa.table(columns), grid[0] if grid is not None else None


def _served(outputs: Sequence[dict[str, Any] | None]) -> dict[str, pa.Array]:
    """``served_label``, ``served_value`` and ``served_proba.CLASS`` (null: no such class)."""
    probas = [o.get("probabilities") if o is not None else None for o in outputs]
    probas = [p if isinstance(p, dict) else None for p in probas]
    classes = dict.fromkeys(c for p in probas if p for c in p if isinstance(c, str))
    return {
        "served_label": pa.array(
            [None if o is None or "label" not in o else class_name(o["label"]) for o in outputs],
            pa.string(),
        ),
        "served_value": pa.array(
            [_number(o.get("value")) if o is not None else None for o in outputs], pa.float64()
        ),
        **{
            SERVED_PROBA + c: pa.array(
                [float(p[c]) if p is not None and c in p else None for p in probas], pa.float64()
            )
            for c in classes
        },
    }


def _labels(log: Log) -> pa.Table:
    """Every label on the log, ``seq`` numbering them in their order of arrival (kept like
    :class:`PredictionFold`)."""
    store = _Store(log, LABELS, "labels")
    table = store.update(_fold_labels)
    if len(store.ends) > 1:  # several partitions: arrival by (append time, partition, offset)
        table = table.sort_by([("stamp", "ascending"), ("part", "ascending"), ("off", "ascending")])
    return table.append_column("seq", pa.array(np.arange(table.num_rows)))


def _fold_labels(batches: Iterator[Batch]) -> pa.Table:
    labels: list[_Label] = []
    stamps: list[int] = []
    parts: list[int] = []
    offsets: list[int] = []
    for batch in batches:
        labels.extend(_read_labels(_msgpack_array(batch.values)))
        stamps.extend(batch.timestamps)
        parts.extend([batch.partition] * len(batch.values))
        offsets.extend(batch.offsets)
    n = len(labels)
    cols: dict[str, list[Any]] = {name: [] for name in _LABEL_FIELDS}
    _columns(labels, _LABEL_FIELDS, cols)
    record_id, endpoint, key, start, end, values, ts = cols.values()
    # label values repeat (a few classes): each distinct value is named once; with mixed
    # types the type is part of the key, since 1, 1.0 and True are equal in Python but name
    # other classes
    keys: list[Any] = values if len(set(map(type, values))) <= 1 else list(
        zip(map(type, values), values, strict=True)
    )  # fmt: skip
    named = {k: _name(k if keys is values else k[1]) for k in set(keys)}
    label, number, text = zip(*map(named.__getitem__, keys), strict=True) if n else [()] * 3
    return pa.table(
        {
            "record_id": pa.array(record_id, pa.string()),
            "endpoint": pa.array(endpoint, pa.string()),
            "key": pa.array(key, pa.string()),
            "window_start": pa.array(start, TIMESTAMP),
            "window_end": pa.array(end, TIMESTAMP),
            "label": pa.array(label, pa.string()),
            "label_value": pa.array(number, pa.float64()),
            "label_json": pa.array(text, pa.string()),
            "label_ts": pa.array(ts, TIMESTAMP),
            "stamp": pa.array(stamps, pa.int64()),
            "part": pa.array(parts, pa.int64()),
            "off": pa.array(offsets, pa.int64()),
        }
    )


class _Seen(msgspec.Struct, frozen=True, tag="Prediction", gc=False):
    """The fields of a prediction a label is checked against (the rest is skipped)."""

    record_id: str
    endpoint: str
    ts: ev.UtcTime
    key: str | None = None


_read_seen = msgspec.msgpack.Decoder(list[_Seen]).decode
_SEEN_FIELDS = ("record_id", "endpoint", "key", "ts")


def predicted(log: Log) -> pa.Table:
    """``record_id``, ``endpoint``, ``key`` and ``ts`` of every prediction on the log (what
    a label is checked against), kept and brought up to date like the views' folds."""
    return _Store(log, PREDICTIONS, "predicted").update(_fold_seen)


def _fold_seen(batches: Iterator[Batch]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in _SEEN_FIELDS}
    for batch in batches:
        _columns(_read_seen(_msgpack_array(batch.values)), _SEEN_FIELDS, cols)
    return pa.table(
        {
            "record_id": pa.array(cols["record_id"], pa.string()),
            "endpoint": pa.array(cols["endpoint"], pa.string()),
            "key": pa.array(cols["key"], pa.string()),
            "ts": pa.array(cols["ts"], TIMESTAMP),
        }
    )


def connect(threads: int | None = None) -> Any:
    """A DuckDB connection that never installs or loads extensions (no network);
    ``threads`` caps its worker threads (default: one per core)."""
    import duckdb

    config: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads is not None:
        config["threads"] = threads
    return duckdb.connect(config=config)


def _select(
    preds: pa.Table, labels: pa.Table, spec: ViewSpec, threads: int | None = None
) -> pa.Table:
    """``pos`` (prediction) and ``seq`` (its latest label, or null) of the view's rows, in order."""
    where = ["TRUE"]
    params: list[Any] = []
    if spec.since is not None:
        where.append("ts >= ?")
        params.append(spec.since)
    if spec.until is not None:
        where.append("ts < ?")
        params.append(spec.until)
    if spec.model is not None:
        name, _, version = spec.model.partition(":")
        where.append("model = ?")
        params.append(name)
        if version:
            if not version.isdigit():
                raise InputError(expected_got("--model NAME or NAME:VERSION", spec.model))
            where.append("version = ?")
            params.append(int(version))
    if spec.status is not None:
        where.append("status = ?")
        params.append(spec.status)
    join = "JOIN" if spec.labelled else "LEFT JOIN"
    order = "ORDER BY ts, record_id, part, off"
    # the entity branch and the label lookup only when they can matter: the plain
    # record-id join is most of the work otherwise
    entity = """
            UNION ALL
            SELECT p.pos, l.seq FROM p JOIN labels l
              ON l.record_id IS NULL AND l.endpoint = p.endpoint AND l.key = p.key
             AND p.ts BETWEEN l.window_start AND l.window_end"""
    label = ", l.label" if spec.sample is not None else ""
    label_join = " LEFT JOIN labels l ON l.seq = latest.seq" if label else ""
    sql = f"""
        WITH p AS (SELECT pos, part, off, record_id, endpoint, key, ts FROM preds WHERE {" AND ".join(where)}),
        cand AS (
            SELECT p.pos, l.seq FROM p JOIN labels l ON l.record_id = p.record_id
            {entity if labels["record_id"].null_count else ""}
        ),
        latest AS (SELECT pos, max(seq) AS seq FROM cand GROUP BY pos),
        joined AS (
            SELECT p.pos, p.part, p.off, p.record_id, p.ts, latest.seq{label}
            FROM p {join} latest ON latest.pos = p.pos{label_join}
        )
    """
    if spec.sample is not None:
        if not 0 < spec.sample <= 1:
            raise InputError(expected_got("--sample in (0, 1]", spec.sample))
        by = "label" if spec.stratify else "NULL"
        sql += f"""
        , ranked AS (
            SELECT *, row_number() OVER (PARTITION BY {by} ORDER BY md5(record_id || ':' || ?), part, off) AS rn,
                   count(*) OVER (PARTITION BY {by}) AS n
            FROM joined
        )
        SELECT pos, seq FROM ranked WHERE rn <= round(n * ?) {order}
        """
        params += [str(spec.seed), spec.sample]
    elif spec.stratify:
        raise InputError("expected --sample FRACTION with --stratify, got no --sample")
    else:
        sql += f"SELECT pos, seq FROM joined {order}"
    con = connect(threads)
    try:
        con.register("preds", preds.select(_SELECTED))
        con.register("labels", labels)
        result: pa.Table = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
    return result


def _msgpack_array(items: Sequence[bytes] | Sequence[msgspec.Raw]) -> bytes:
    """MessagePack values joined into one array (decoded in one call)."""
    return b"\xdd" + len(items).to_bytes(4, "big") + b"".join(items)


def _float_layout(data: bytes) -> tuple[list[str], list[int]] | None:
    """Keys and value positions of a MessagePack map of distinct str keys to float64s, or None."""
    if data[:1] and 0x80 <= data[0] <= 0x8F:
        pos, count = 1, data[0] & 0x0F
    elif data[:1] == b"\xde" and len(data) >= 3:
        pos, count = 3, int.from_bytes(data[1:3], "big")
    else:
        return None
    keys: list[str] = []
    starts: list[int] = []
    for _ in range(count):
        head = data[pos] if pos < len(data) else -1
        if 0xA0 <= head <= 0xBF:
            pos, size = pos + 1, head & 0x1F
        elif head == 0xD9 and pos + 2 <= len(data):
            pos, size = pos + 2, data[pos + 1]
        elif head == 0xDA and pos + 3 <= len(data):
            pos, size = pos + 3, int.from_bytes(data[pos + 1 : pos + 3], "big")
        else:
            return None
        try:
            keys.append(data[pos : pos + size].decode())
        except UnicodeDecodeError:
            return None
        pos += size
        if pos + 9 > len(data) or data[pos] != 0xCB:
            return None  # not a float64: the exact decoder reads this layout
        starts.append(pos + 1)
        pos += 9
    if pos != len(data) or not keys or len(set(keys)) != len(keys):
        return None
    return keys, starts


def _float_grid(raws: Sequence[msgspec.Raw]) -> tuple[list[str], np.ndarray] | None:
    """Feature maps sharing one all-float64 layout as a ``[features, rows]`` float64 array.

    msgspec writes every float as the 9-byte MessagePack float64, so the maps of one
    producer are byte-identical outside their value bytes (:mod:`eventml.models._rows`).
    The first map gives the layout; every map is checked against it outside the value
    bytes with one strided numpy compare per run of fixed bytes, and each feature is read
    as one strided big-endian column: no Python object per value, no gather of scattered
    bytes. None when any map differs (other keys, an int, a null, a string): the caller
    then decodes exactly.
    """
    if not raws:
        return None
    first = bytes(raws[0])  # msgspec.Raw is not indexable
    layout = _float_layout(first)
    if layout is None or set(map(len, raws)) != {len(first)}:
        return None
    keys, starts = layout
    length = len(first)
    edges = [0, *itertools.chain.from_iterable((s, s + 8) for s in starts), length]
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b > a]
    expected = np.frombuffer(first, np.uint8)
    out = np.empty((len(starts), len(raws)))
    for lo in range(0, len(raws), _GRID_ROWS):
        chunk = raws[lo : lo + _GRID_ROWS]
        buf = b"".join(chunk)
        data = np.frombuffer(buf, np.uint8).reshape(len(chunk), length)
        if not all((data[:, a:b] == expected[a:b]).all() for a, b in runs):
            return None
        for j, s in enumerate(starts):
            out[j, lo : lo + len(chunk)] = np.ndarray((len(chunk),), ">f8", buf, s, (length,))
    return keys, out


def _feature_columns(
    raws: Sequence[msgspec.Raw], rows: Sequence[dict[str, ev.Feature]] | None = None
) -> dict[str, pa.Array]:
    """One Arrow column per feature name (first-seen order).

    Maps sharing one all-float layout are read from their bytes (:func:`_float_grid`).
    Otherwise rows whose values are all numbers or missing (the typed decoder says so, as
    in the engine) become float64 columns; any other column is typed by its values.
    ``rows``: the maps already decoded, if the caller has them.
    """
    grid = _float_grid(raws)
    if grid is not None:
        return {n: pa.array(grid[1][i]) for i, n in enumerate(grid[0])}
    if rows is None:
        rows = _read_feature_rows(_msgpack_array(raws))
    names = list(
        dict.fromkeys(n for layout in dict.fromkeys(tuple(r) for r in rows) for n in layout)
    )
    try:
        floats = _read_float_rows(_msgpack_array(raws))
    except msgspec.ValidationError:
        floats = None
    if floats is not None and names:
        same = len({len(r) for r in floats}) == 1 and len(floats[0]) == len(names)
        if same:
            getter = operator.itemgetter(*names)
            values = map(getter, floats) if len(names) > 1 else ((getter(r),) for r in floats)
            try:
                flat = np.fromiter(
                    itertools.chain.from_iterable(values), np.float64, len(floats) * len(names)
                )
                grid2 = flat.reshape(len(floats), len(names))
                return {n: pa.array(grid2[:, i]) for i, n in enumerate(names)}
            except (KeyError, TypeError):
                pass  # a missing value (None) or another layout: column by column
        return {n: pa.array([r.get(n) for r in floats], pa.float64()) for n in names}
    out: dict[str, pa.Array] = {}
    for name in names:
        column = [r.get(name) for r in rows]
        try:
            if any(isinstance(v, bool | str) for v in column):
                raise TypeError(name)
            out[name] = pa.array(column, pa.float64())
        except (TypeError, pa.ArrowInvalid, pa.ArrowTypeError):
            try:
                out[name] = pa.array(column)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                out[name] = pa.array(
                    [None if v is None else _json.encode(v).decode() for v in column]
                )
    return out


def _split(ts: pa.ChunkedArray, spec: ViewSpec) -> tuple[pa.ChunkedArray, datetime | None]:
    n = len(ts)
    if spec.split_at is not None:
        cutoff: datetime | None = spec.split_at
    else:
        if not 0 <= spec.validation < 1:
            raise InputError(expected_got("a validation fraction in [0, 1)", spec.validation))
        held = round(n * spec.validation)
        cutoff = ts[n - held].as_py() if held else None
    if cutoff is None:
        return pa.chunked_array([pa.array(np.full(n, "train", dtype=object), pa.string())]), None
    held_out = pc.greater_equal(ts, pa.scalar(cutoff, TIMESTAMP))
    return pc.if_else(held_out, "validation", "train"), cutoff


class _Picked:
    """The view's rows out of the folds, in view order: event, served and label columns."""

    def __init__(
        self,
        log: Log,
        spec: ViewSpec,
        progress: Callable[[int], None] | None,
        preds: PredictionFold | None = None,
        threads: int | None = None,
    ) -> None:
        if preds is None:
            preds = PredictionFold(log, spec.endpoint, progress)
        labels = _labels(log)
        chosen = _select(preds.table, labels, spec, threads)
        if chosen.num_rows == 0:
            what = "labelled predictions" if spec.labelled else "predictions"
            raise InputError(
                f"expected {what} for endpoint {spec.endpoint!r}, got none "
                f"({preds.table.num_rows} predictions and {labels.num_rows} labels on the log "
                f"match no row{' of the filters' if _filtered(spec) else ''})"
            )
        pos = self.positions = chosen["pos"]
        in_order = len(pos) == preds.table.num_rows and bool(
            np.array_equal(pos.to_numpy(), np.arange(len(pos)))
        )
        # the bytes columns are the bulk of the fold: taken only when a column needs them
        bulky = ["features", "output"]
        self._bytes = preds.table.select(bulky)
        self._pos = None if in_order else pos
        self._taken: dict[str, pa.ChunkedArray] = {}
        rest = preds.table.drop_columns(bulky)
        self.base = rest if in_order else rest.take(pos)
        self.floats = preds.floats
        self.lab = labels.select(["label", "label_value", "label_json", "label_ts"]).take(
            chosen["seq"]
        )
        self.split, self.cutoff = _split(self.base["ts"], spec)

    def bytes(self, name: str) -> pa.ChunkedArray:
        """The fold's ``features`` or ``output`` bytes of the view's rows."""
        if name not in self._taken:
            column = self._bytes[name]
            self._taken[name] = column if self._pos is None else column.take(self._pos)
        return self._taken[name]

    def columns(self, served: Sequence[str], text: dict[str, Any]) -> dict[str, Any]:
        """The view's columns up to the features: ``text`` after ``served_value``, then the
        ``served`` columns of the fold."""
        return {
            **{c: self.base[c] for c in ("record_id", "endpoint", "key", "ts", "status")},
            **{c: self.base[c] for c in ("model", "version", "served_label", "served_value")},
            **text,
            **{c: self.base[c] for c in served},
            **{c: self.lab[c] for c in ("label", "label_value", "label_json", "label_ts")},
            "split": self.split,
        }

    def features(self, rows: Sequence[dict[str, ev.Feature]] | None = None) -> dict[str, Any]:
        """The feature columns: from the fold when it has them, else from the bytes."""
        if self.floats is not None:
            return {n: self.base[FEATURE_PREFIX + n] for n in self.floats}
        return _feature_columns(self.bytes("features").to_pylist(), rows)

    def view(self, spec: ViewSpec, columns: dict[str, Any], feats: dict[str, Any]) -> View:
        for name, arr in feats.items():
            columns[FEATURE_PREFIX + name] = arr
        table = pa.table(columns)
        counts = pc.value_counts(table["label"]).to_pylist()
        return View(
            table=table, features=list(feats), spec=spec, cutoff=self.cutoff,
            labels={c["values"]: c["counts"] for c in counts if c["values"] is not None},
            feature_bytes=self.bytes("features"), positions=self.positions,
        )  # fmt: skip


def build_view(log: Log, spec: ViewSpec, progress: Callable[[int], None] | None = None) -> View:
    """Fold predictions and labels into the view ``spec`` describes (see the module docstring).

    An empty view raises :class:`~eventml.errors.InputError` saying what was looked for.
    """
    picked = _Picked(log, spec, progress)
    features = _read_feature_rows(_msgpack_array(picked.bytes("features").to_pylist()))
    outputs = _read_outputs(_msgpack_array(picked.bytes("output").to_pylist()))
    text = {
        "output": pa.array([_json.encode(o).decode() for o in outputs], pa.string()),
        "features": pa.array([_json.encode(f).decode() for f in features], pa.string()),
    }
    return picked.view(spec, picked.columns((), text), picked.features(features))


def replay_view(
    log: Log,
    spec: ViewSpec,
    progress: Callable[[int], None] | None = None,
    preds: PredictionFold | None = None,
    threads: int | None = None,
) -> View:
    """The rows and columns of :func:`build_view` that replay reads, folded the same way.

    No ``output`` and ``features`` JSON text (the features ride as ``feature_bytes``), so
    no content hash; the served probabilities are float columns ``served_proba.CLASS``
    (null where the served answer has no such class) instead of text to decode again.
    ``preds``: the endpoint's fold, if the caller folded it already; ``threads``: DuckDB's
    for the label join (replay scores on another core meanwhile).
    """
    picked = _Picked(log, spec, progress, preds, threads)
    served = [c for c in picked.base.column_names if c.startswith(SERVED_PROBA)]
    return picked.view(spec, picked.columns(served, {}), picked.features())


def _filtered(spec: ViewSpec) -> bool:
    return any(x is not None for x in (spec.since, spec.until, spec.model, spec.status))


def view_hash(table: pa.Table) -> str:
    """sha256 of the canonical JSON ``[columns, rows]`` of the hashed columns (module docstring)."""
    cols: list[list[Any]] = []
    for name in HASHED:
        col = table[name]
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.int64())
        cols.append(col.to_pylist())
    return hashlib.sha256(_json.encode([list(HASHED), list(zip(*cols, strict=True))])).hexdigest()


def write_view(view: View, path: Path) -> None:
    """The view as Parquet; the hash and the spec ride in the schema metadata."""
    import pyarrow.parquet as pq

    meta = {
        b"eventml.view_hash": view.hash.encode(),
        b"eventml.view_spec": _json.encode(view.spec) if view.spec else b"null",
    }
    pq.write_table(view.table.replace_schema_metadata(meta), path)


def read_view(path: Path) -> View:
    """A view written by :func:`write_view`; its hash is recomputed from the rows."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(expected_got("a view Parquet file (eventml view --out)", str(path)))
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"expected a Parquet file, got {exc}", where=str(path)) from exc
    missing = [c for c in (*HASHED, "label", "label_value") if c not in table.column_names]
    if missing:
        raise InputError(
            f"expected a view with columns {missing}, got {table.column_names}", where=str(path)
        )
    table = table.replace_schema_metadata(None)
    if table.num_rows == 0:
        raise InputError("expected a view with rows, got an empty one", where=str(path))
    features = [
        c[len(FEATURE_PREFIX) :] for c in table.column_names if c.startswith(FEATURE_PREFIX)
    ]
    held = table.filter(pc.equal(table["split"], "validation"))["ts"]
    cutoff = pc.min(held).as_py() if len(held) else None
    view = View(table=table, features=features, cutoff=cutoff)
    view.hash  # noqa: B018 - computed now: a file's rows are hashed when read, as before
    return view
