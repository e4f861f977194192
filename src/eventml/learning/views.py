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
and autoload off: no network).
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Callable, Sequence
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
from eventml.log import Log

PREDICTIONS = "predictions"
FEATURE_PREFIX = "feature."
HASHED = (
    "record_id", "endpoint", "key", "ts", "status", "model", "version", "output", "features",
    "label_json", "label_ts", "split",
)  # fmt: skip
_TS = pa.timestamp("us", tz="UTC")


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
    """A built view: the table, its content hash and its feature names."""

    table: pa.Table
    hash: str
    features: list[str]
    spec: ViewSpec | None = None
    cutoff: datetime | None = None
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def split(self, name: str) -> pa.Table:
        return self.table.filter(pc.equal(self.table["split"], name))


class _Pred(msgspec.Struct, frozen=True, tag="Prediction", gc=False):
    record_id: str
    endpoint: str
    ts: ev.UtcTime
    status: str
    features: msgspec.Raw
    key: str | None = None
    model: str | None = None
    version: int | None = None
    output: msgspec.Raw = msgspec.Raw(b"\xc0")  # MessagePack nil when absent


_read_preds = msgspec.msgpack.Decoder(list[_Pred]).decode
_read_labels = msgspec.msgpack.Decoder(list[ev.Label]).decode
_read_feature_rows = msgspec.msgpack.Decoder(list[dict[str, ev.Feature]]).decode
_read_float_rows = msgspec.msgpack.Decoder(list[dict[str, float | None]]).decode
_read_outputs = msgspec.msgpack.Decoder(list[dict[str, Any] | None]).decode
_json = msgspec.json.Encoder()


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


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class _Preds:
    """The predictions of one endpoint in log order, as Arrow columns plus raw bytes."""

    def __init__(self, log: Log, endpoint: str, progress: Callable[[int], None] | None) -> None:
        preds: list[_Pred] = []
        read = 0
        if PREDICTIONS in log.topics():
            for batch in log.read_all(PREDICTIONS):
                preds.extend(
                    p for p in _read_preds(_msgpack_array(batch.values)) if p.endpoint == endpoint
                )
                read += len(batch.values)
                if progress:
                    progress(read)
        self.features: list[msgspec.Raw] = [p.features for p in preds]
        self.outputs: list[msgspec.Raw] = [p.output for p in preds]
        self.table = pa.table(
            {
                "pos": pa.array(range(len(preds)), pa.int64()),
                "record_id": pa.array([p.record_id for p in preds], pa.string()),
                "endpoint": pa.array([p.endpoint for p in preds], pa.string()),
                "key": pa.array([p.key for p in preds], pa.string()),
                "ts": pa.array([p.ts for p in preds], _TS),
                "status": pa.array([p.status for p in preds], pa.string()),
                "model": pa.array([p.model for p in preds], pa.string()),
                "version": pa.array([p.version for p in preds], pa.int64()),
            }
        )


def _labels(log: Log) -> pa.Table:
    """Every label on the log, ``seq`` numbering them in their order of arrival."""
    labels: list[ev.Label] = []
    order: list[tuple[int, int, int]] = []
    if LABELS in log.topics():
        for batch in log.read_all(LABELS):
            labels.extend(_read_labels(_msgpack_array(batch.values)))
            order.extend(
                (t, batch.partition, o)
                for t, o in zip(batch.timestamps, batch.offsets, strict=True)
            )
    if order != sorted(order):  # several partitions: arrival order by append time
        labels = [lb for _, lb in sorted(zip(order, labels, strict=True), key=lambda r: r[0])]
    return pa.table(
        {
            "seq": pa.array(range(len(labels)), pa.int64()),
            "record_id": pa.array([lb.record_id for lb in labels], pa.string()),
            "endpoint": pa.array([lb.endpoint for lb in labels], pa.string()),
            "key": pa.array([lb.key for lb in labels], pa.string()),
            "window_start": pa.array([lb.window_start for lb in labels], _TS),
            "window_end": pa.array([lb.window_end for lb in labels], _TS),
            "label": pa.array([class_name(lb.value) for lb in labels], pa.string()),
            "label_value": pa.array([_number(lb.value) for lb in labels], pa.float64()),
            "label_json": pa.array([_json.encode(lb.value).decode() for lb in labels], pa.string()),
            "label_ts": pa.array([lb.ts for lb in labels], _TS),
        }
    )


def connect() -> Any:
    """A DuckDB connection that never installs or loads extensions (no network)."""
    import duckdb

    return duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )


def _select(preds: pa.Table, labels: pa.Table, spec: ViewSpec) -> pa.Table:
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
    order = "ORDER BY ts, record_id, pos"
    sql = f"""
        WITH p AS (SELECT pos, record_id, endpoint, key, ts FROM preds WHERE {" AND ".join(where)}),
        cand AS (
            SELECT p.pos, l.seq FROM p JOIN labels l ON l.record_id = p.record_id
            UNION ALL
            SELECT p.pos, l.seq FROM p JOIN labels l
              ON l.record_id IS NULL AND l.endpoint = p.endpoint AND l.key = p.key
             AND p.ts BETWEEN l.window_start AND l.window_end
        ),
        latest AS (SELECT pos, max(seq) AS seq FROM cand GROUP BY pos),
        joined AS (
            SELECT p.pos, p.record_id, p.ts, latest.seq, l.label
            FROM p {join} latest ON latest.pos = p.pos LEFT JOIN labels l ON l.seq = latest.seq
        )
    """
    if spec.sample is not None:
        if not 0 < spec.sample <= 1:
            raise InputError(expected_got("--sample in (0, 1]", spec.sample))
        by = "label" if spec.stratify else "NULL"
        sql += f"""
        , ranked AS (
            SELECT *, row_number() OVER (PARTITION BY {by} ORDER BY md5(record_id || ':' || ?), pos) AS rn,
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
    con = connect()
    try:
        con.register("preds", preds)
        con.register("labels", labels)
        result: pa.Table = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
    return result


def _msgpack_array(items: Sequence[bytes] | Sequence[msgspec.Raw]) -> bytes:
    """MessagePack values joined into one array (decoded in one call)."""
    return b"\xdd" + len(items).to_bytes(4, "big") + b"".join(items)


def _feature_columns(
    raws: Sequence[bytes], rows: Sequence[dict[str, ev.Feature]]
) -> dict[str, pa.Array]:
    """One Arrow column per feature name (first-seen order).

    Rows whose values are all numbers or missing (the typed decoder says so, as in the
    engine) become float64 columns in one pass; otherwise each column is typed by its values.
    """
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
                grid = flat.reshape(len(floats), len(names))
                return {n: pa.array(grid[:, i]) for i, n in enumerate(names)}
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


def _split(ts: pa.Array, spec: ViewSpec) -> tuple[list[str], datetime | None]:
    n = len(ts)
    if spec.split_at is not None:
        cutoff: datetime | None = spec.split_at
    else:
        if not 0 <= spec.validation < 1:
            raise InputError(expected_got("a validation fraction in [0, 1)", spec.validation))
        held = round(n * spec.validation)
        cutoff = ts[n - held].as_py() if held else None
    if cutoff is None:
        return ["train"] * n, None
    mask = pc.greater_equal(ts, pa.scalar(cutoff, _TS)).to_pylist()
    return ["validation" if m else "train" for m in mask], cutoff


def build_view(log: Log, spec: ViewSpec, progress: Callable[[int], None] | None = None) -> View:
    """Fold predictions and labels into the view ``spec`` describes (see the module docstring).

    An empty view raises :class:`~eventml.errors.InputError` saying what was looked for.
    """
    preds = _Preds(log, spec.endpoint, progress)
    labels = _labels(log)
    chosen = _select(preds.table, labels, spec)
    if chosen.num_rows == 0:
        what = "labelled predictions" if spec.labelled else "predictions"
        raise InputError(
            f"expected {what} for endpoint {spec.endpoint!r}, got none "
            f"({preds.table.num_rows} predictions and {labels.num_rows} labels on the log match no row"
            f"{' of the filters' if _filtered(spec) else ''})"
        )
    pos = chosen["pos"]
    base = preds.table.take(pos)
    seq = chosen["seq"]
    lab = labels.select(["label", "label_value", "label_json", "label_ts"]).take(seq)
    picked = pos.to_pylist()
    raws = [preds.features[i] for i in picked]
    features = _read_feature_rows(_msgpack_array(raws))
    outputs = _read_outputs(_msgpack_array([preds.outputs[i] for i in picked]))
    split, cutoff = _split(base["ts"], spec)
    columns: dict[str, Any] = {
        "record_id": base["record_id"],
        "endpoint": base["endpoint"],
        "key": base["key"],
        "ts": base["ts"],
        "status": base["status"],
        "model": base["model"],
        "version": base["version"],
        "served_label": pa.array(
            [None if o is None or "label" not in o else class_name(o["label"]) for o in outputs],
            pa.string(),
        ),
        "served_value": pa.array(
            [_number(o.get("value")) if o is not None else None for o in outputs], pa.float64()
        ),
        "output": pa.array([_json.encode(o).decode() for o in outputs], pa.string()),
        "features": pa.array([_json.encode(f).decode() for f in features], pa.string()),
        "label": lab["label"],
        "label_value": lab["label_value"],
        "label_json": lab["label_json"],
        "label_ts": lab["label_ts"],
        "split": pa.array(split, pa.string()),
    }
    feats = _feature_columns(raws, features)
    for name, arr in feats.items():
        columns[FEATURE_PREFIX + name] = arr
    table = pa.table(columns)
    counts = pc.value_counts(table["label"]).to_pylist()
    return View(
        table=table, hash=view_hash(table), features=list(feats), spec=spec, cutoff=cutoff,
        labels={c["values"]: c["counts"] for c in counts if c["values"] is not None},
    )  # fmt: skip


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
    return View(table=table, hash=view_hash(table), features=features, cutoff=cutoff)
