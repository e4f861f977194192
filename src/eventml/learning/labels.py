"""Labels: ground truth appended as :class:`~eventml.events.Label` events on ``labels``.

Two shapes, one event type (DESIGN §7):

- by record: ``record_id, value[, ts]``; the label belongs to the prediction of that record;
- by entity: ``endpoint, key, ts, value``; an outcome known per entity (a customer churned
  at ``ts``). It is stored as one event with ``window_start = ts - window`` and
  ``window_end = ts`` and attaches to every prediction of ``endpoint`` whose ``key`` is
  ``key`` and whose event time lies in ``[ts - window, ts]`` (both ends included).
  ``window`` defaults to 30 days.

Nothing is updated in place: a relabel is a new event, and views take the latest label of
each prediction (the highest position on ``labels``; :func:`append_labels` writes every
label to partition 0 so the topic has one total order).

A label must name something that was predicted: a record id without a prediction event,
or an entity window without one, is refused with the offending ids and nothing is written
(the whole batch is checked before the one append). The check reads a fold of the
predictions' ids, entities and times kept beside an embedded log
(:func:`~eventml.learning.views.predicted`), so a label appended to a long log decodes
only the predictions since the last check.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from eventml import events as ev
from eventml.errors import DecodeError, InputError, expected_got
from eventml.log import Log

TOPIC = "labels"
PREDICTIONS = "predictions"
DEFAULT_WINDOW = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class LabelSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`append_labels` wrote."""

    appended: int
    by_record: int
    by_entity: int
    first_offset: int | None = None
    last_offset: int | None = None


def parse_window(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a duration.

    >>> parse_window("30d"), parse_window("1.5h")
    (datetime.timedelta(days=30), datetime.timedelta(seconds=5400))
    """
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise InputError(expected_got("a positive duration like 30d, 12h, 90m or 45s", text))
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_value(text: str) -> float | int | str | bool:
    """A label value from text: an int, a finite float, ``true``/``false``, or the text.

    >>> parse_value("1"), parse_value("0.25"), parse_value("yes"), parse_value("true")
    (1, 0.25, 'yes', True)
    """
    stripped = text.strip()
    if stripped == "":
        raise InputError("expected a label value, got an empty field")
    if stripped in ("true", "false"):
        return stripped == "true"
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        value = float(stripped)
    except ValueError:
        return stripped
    if not math.isfinite(value):
        raise InputError(expected_got("a finite label value", text))
    return value


def _check_value(value: object, where: str) -> float | int | str | bool:
    if isinstance(value, str):
        try:
            return parse_value(value)
        except InputError as exc:
            raise InputError(exc.message, where=where) from None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InputError(expected_got("a label value (number, string or boolean)", value), where=where)


def _time(value: object, where: str) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str):
        raise InputError(expected_got("an RFC 3339 time", value), where=where)
    try:
        return ev.parse_time(value)
    except DecodeError as exc:
        raise InputError(exc.message, where=where) from exc


def label_from_fields(
    fields: dict[str, Any],
    where: str,
    *,
    window: timedelta = DEFAULT_WINDOW,
    source: str | None = None,
) -> ev.Label:
    """One label from named fields: ``record_id, value[, ts]`` or ``endpoint, key, ts, value``."""
    if "value" not in fields or fields["value"] is None:
        raise InputError(expected_got("a field 'value'", sorted(fields)), where=where)
    value = _check_value(fields["value"], where)
    ts_raw = fields.get("ts")
    if fields.get("record_id") not in (None, ""):
        extra = sorted(k for k in fields if k not in ("record_id", "value", "ts"))
        if extra:
            raise InputError(
                f"expected fields record_id, value[, ts], got also {extra}", where=where
            )
        ts = ev.now() if ts_raw in (None, "") else _time(ts_raw, where)
        return ev.Label(record_id=str(fields["record_id"]), value=value, ts=ts, source=source)
    missing = [k for k in ("endpoint", "key", "ts") if fields.get(k) in (None, "")]
    if missing:
        raise InputError(
            f"expected record_id, or endpoint, key and ts, got no {', '.join(missing)}",
            where=where,
        )
    ts = _time(ts_raw, where)
    return ev.Label(
        endpoint=str(fields["endpoint"]), key=str(fields["key"]), window_start=ts - window,
        window_end=ts, value=value, ts=ts, source=source,
    )  # fmt: skip


def labels_from_json(
    items: object, *, window: timedelta = DEFAULT_WINDOW, source: str | None = None
) -> list[ev.Label]:
    """Labels from a decoded JSON body (``POST /api/labels``): a list of objects with the
    fields of a label file's rows; a bad item refuses the whole list, naming its index."""
    if not isinstance(items, list):
        raise InputError(f"expected a JSON list of labels, got a {type(items).__name__}")
    labels: list[ev.Label] = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise InputError(
                f"expected a JSON object, got a {type(obj).__name__}", where=f"item {i}"
            )
        labels.append(label_from_fields(obj, f"item {i}", window=window, source=source))
    return labels


def read_label_file(path: Path, *, window: timedelta = DEFAULT_WINDOW) -> list[ev.Label]:
    """Labels from a CSV (header row ``record_id,value[,ts]`` or ``endpoint,key,ts,value``)
    or a JSONL file (one object per line with the same fields). Any bad line refuses the file."""
    if not path.is_file():
        raise InputError(expected_got("an existing label file", str(path)))
    source = str(path)
    suffix = path.suffix.lower()
    labels: list[ev.Label] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"expected UTF-8 text, got {exc.reason}", where=path.name) from exc
    if suffix in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"line {number} of {path.name}"
            try:
                obj = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise InputError(
                    f"expected a JSON object, got invalid JSON: {exc}", where=where
                ) from None
            if not isinstance(obj, dict):
                raise InputError(f"expected a JSON object, got a {type(obj).__name__}", where=where)
            labels.append(label_from_fields(obj, where, window=window, source=source))
        return labels
    if suffix not in (".csv", ".tsv", ".txt"):
        raise InputError(expected_got("a .csv or .jsonl label file", path.name))
    rows = csv.reader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
    header: list[str] | None = None
    for number, row in enumerate(rows, start=1):
        if not any(c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            known = {"record_id", "value", "ts", "endpoint", "key"}
            if "value" not in header or not set(header) <= known:
                raise InputError(
                    f"expected a header row record_id,value[,ts] or endpoint,key,ts,value, got {header}",
                    where=f"line {number} of {path.name}",
                )
            continue
        where = f"line {number} of {path.name}"
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields, got {len(row)}", where=where)
        fields = {k: v for k, v in zip(header, row, strict=True)}
        labels.append(label_from_fields(fields, where, window=window, source=source))
    if header is None:
        raise InputError("expected a header row and labels, got an empty file", where=path.name)
    return labels


def check_labels(log: Log, labels: Sequence[ev.Label]) -> None:
    """Refuse labels that name no prediction (listing which); nothing is written.

    Checked against the predictions' ids, entities and times folded once into Arrow
    (:func:`~eventml.learning.views.predicted`, kept up to date beside an embedded log):
    record ids by one hash lookup, entity windows by one DuckDB join.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from eventml.learning.views import TIMESTAMP, connect, predicted  # views imports this

    seen = predicted(log)
    ids = pa.array(sorted({lb.record_id for lb in labels if lb.record_id is not None}), pa.string())
    unknown = ids.filter(pc.invert(pc.is_in(ids, value_set=seen["record_id"]))).to_pylist()
    if unknown:
        shown = ", ".join(unknown[:10]) + (
            f" … ({len(unknown)} in all)" if len(unknown) > 10 else ""
        )
        raise InputError(
            f"expected labels for predicted records, got {len(unknown)} unknown record id(s): {shown}"
        )
    windows: list[tuple[str, str, datetime, datetime]] = []
    for lb in labels:
        if lb.record_id is not None:
            continue
        if (
            lb.endpoint is None
            or lb.key is None
            or lb.window_start is None
            or lb.window_end is None
        ):
            raise InputError(
                expected_got(
                    "a label with record_id, or endpoint, key and a window", ev.to_builtins(lb)
                )
            )
        windows.append((lb.endpoint, lb.key, lb.window_start, lb.window_end))
    if not windows:
        return
    asked = pa.table(
        {
            "i": pa.array(range(len(windows)), pa.int64()),
            "endpoint": pa.array([w[0] for w in windows], pa.string()),
            "key": pa.array([w[1] for w in windows], pa.string()),
            "start": pa.array([w[2] for w in windows], TIMESTAMP),
            "end": pa.array([w[3] for w in windows], TIMESTAMP),
        }
    )
    con = connect()
    try:
        con.register("asked", asked)
        con.register("seen", seen)
        found = con.sql(
            """SELECT i FROM asked a WHERE NOT EXISTS (
                   SELECT 1 FROM seen s WHERE s.endpoint = a.endpoint AND s.key = a.key
                   AND s.ts BETWEEN a.start AND a.end)
               ORDER BY i"""
        ).fetchall()
    finally:
        con.close()
    empty = []
    for (i,) in found:
        endpoint, key, start, end = windows[i]
        empty.append(f"{endpoint}/{key} [{start.isoformat()}, {end.isoformat()}]")
    if empty:
        shown = "; ".join(empty[:10]) + (f" … ({len(empty)} in all)" if len(empty) > 10 else "")
        raise InputError(
            f"expected a prediction of each entity within its label window, got none for {shown}"
        )


def append_labels(log: Log, labels: Iterable[ev.Label]) -> LabelSummary:
    """Check then append labels to ``labels`` in one append (what ``POST /api/labels`` calls).

    Unknown record ids or empty entity windows raise :class:`~eventml.errors.InputError`
    and nothing is written.
    """
    batch = list(labels)
    if not batch:
        raise InputError("expected at least one label, got none")
    check_labels(log, batch)
    log.create_topic(TOPIC)
    appended = log.append(TOPIC, [ev.encode(lb) for lb in batch], partition=0)
    by_record = sum(1 for lb in batch if lb.record_id is not None)
    return LabelSummary(
        appended=len(batch), by_record=by_record, by_entity=len(batch) - by_record,
        first_offset=appended.offsets[0], last_offset=appended.offsets[-1],
    )  # fmt: skip
