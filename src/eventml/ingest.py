"""Files into records: CSV, JSONL and Parquet read line by line, bad lines to ``deadletter``.

Rules (the same for every format):

- A CSV field is a number (``7`` stays an int, ``7.4`` a float) unless its column is named
  in ``text_columns``; an empty field or a value listed in ``missing`` is a missing value
  only if ``missing`` says so (``missing=("",)``), otherwise the line is refused. Infinite
  and NaN spellings are refused: write them as missing.
- A JSONL line is ``{"features": {...}, "id"?, "key"?, "ts"?}`` or a flat object whose
  fields are all features. Feature values are numbers, strings, booleans or null.
- A Parquet row's columns are features; numeric, string and boolean columns only.
- ``id_column``, ``key_column`` and ``ts_column`` take a record's id (generated when
  absent), entity key and event time (RFC 3339 with a zone; now when absent) from a field
  instead of the features; ``exclude`` drops columns (a label column, say).
- A line that breaks a rule becomes a :class:`~eventml.events.DeadLetter` with the file,
  line number, raw bytes and the reason; the rest of the file goes on. Blank lines are
  skipped. Text must be UTF-8.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from eventml import events as ev
from eventml.errors import DecodeError, InputError, expected_got
from eventml.log import Log

FileFormat = Literal["csv", "jsonl", "parquet"]
_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_ENDPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NOT_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


class SendOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How to read a file into records for one endpoint."""

    endpoint: str
    format: FileFormat | None = None
    sep: str | None = None
    columns: tuple[str, ...] = ()
    text_columns: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    missing: frozenset[str] = frozenset()
    id_column: str | None = None
    key_column: str | None = None
    ts_column: str | None = None
    batch: int = 1000


class SendSummary(msgspec.Struct, kw_only=True):
    """What ``send`` did: counts, and the first few reasons for rejected lines."""

    file: str
    endpoint: str
    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = []


class _Bad(Exception):
    """A rule broken by one line; becomes a dead letter."""


def check_endpoint(name: str) -> str:
    """An endpoint name: letters, digits, ``_ . -``, starting with a letter or digit."""
    if not _ENDPOINT.match(name):
        raise InputError(expected_got("an endpoint name of letters, digits, '_', '.' or '-'", name))
    return name


def detect_format(path: Path, given: FileFormat | None) -> FileFormat:
    if given is not None:
        return given
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InputError(
            expected_got("a .csv, .tsv, .jsonl or .parquet file (or --format)", path.name)
        )
    return found


class _Builder:
    """Turns named fields into a record, applying the id / key / ts / exclude options."""

    def __init__(self, opts: SendOptions) -> None:
        self.opts = opts
        self.special = {c for c in (opts.id_column, opts.key_column, opts.ts_column) if c}

    def record(self, fields: dict[str, Any], where: str) -> ev.Record:
        o = self.opts
        features = {k: v for k, v in fields.items() if k not in self.special and k not in o.exclude}
        return ev.Record(
            id=_ident(fields.get(o.id_column) if o.id_column else None, "id", where) or ev.new_id(),
            endpoint=o.endpoint,
            key=_ident(fields.get(o.key_column) if o.key_column else None, "key", where),
            ts=_time(fields.get(o.ts_column) if o.ts_column else None, where),
            features={k: _feature(k, v) for k, v in features.items()},
        )


def _ident(value: object, what: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Bad(expected_got(f"a string or integer {what}", value))


def _time(value: object, where: str) -> datetime:
    if value is None:
        return ev.now()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _Bad(f"expected a time with a zone, got {value.isoformat()!r}")
        return value
    if not isinstance(value, str):
        raise _Bad(expected_got("an RFC 3339 time", value))
    try:
        return ev.parse_time(value)
    except DecodeError as exc:
        raise _Bad(exc.message) from exc


def _feature(name: str, value: object) -> ev.Feature:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(expected_got(f"a finite number for feature {name!r}", value))
        return value
    kind = type(value).__name__
    raise _Bad(f"expected a number, string, boolean or null for feature {name!r}, got a {kind}")


def _number(name: str, text: str, missing: frozenset[str]) -> float | int | None:
    if text in missing:
        return None
    if text == "":
        raise _Bad(f"expected a number for feature {name!r}, got an empty field")
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        value = float(stripped)
    except ValueError:
        raise _Bad(expected_got(f"a number for feature {name!r}", text)) from None
    if stripped.lower() in _NOT_FINITE:
        raise _Bad(expected_got(f"a finite number for feature {name!r}", text))
    return value


def _lines(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(line number, raw line without its end, bytes read so far); blank lines skipped."""
    with path.open("rb") as f:
        done = 0
        for number, raw in enumerate(f, start=1):
            done += len(raw)
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line, done


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise _Bad(f"expected UTF-8 text, got byte 0x{bad} at column {exc.start + 1}") from None


Item = tuple[ev.Record | ev.DeadLetter, int]
"""A record or a dead letter, with the bytes (or rows) of the file read so far."""


def _dead(
    opts: SendOptions, path: Path, line: int, raw: bytes, reason: str, unit: str = "line"
) -> ev.DeadLetter:
    return ev.DeadLetter(
        reason=f"{reason} ({unit} {line} of {path.name})",
        raw=raw,
        endpoint=opts.endpoint,
        file=str(path),
        line=line,
        ts=ev.now(),
    )


def read_csv(path: Path, opts: SendOptions) -> Iterator[Item]:
    sep = opts.sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    columns: Sequence[str] = opts.columns
    builder = _Builder(opts)
    for number, raw, done in _lines(path):
        try:
            fields = next(csv.reader([_utf8(raw)], delimiter=sep))
            if not columns:
                columns = [c.strip() for c in fields]
                _check_columns(columns, opts, path)
                continue
            if len(fields) != len(columns):
                raise _Bad(f"expected {len(columns)} fields, got {len(fields)}")
            named: dict[str, Any] = {}
            for col, text in zip(columns, fields, strict=True):
                if col in opts.exclude or col in builder.special or col in opts.text_columns:
                    named[col] = None if text in opts.missing else text
                else:
                    named[col] = _number(col, text, opts.missing)
            yield builder.record(named, f"line {number}"), done
        except _Bad as exc:
            if not columns:
                raise InputError(
                    f"expected a header row, got {exc}", where=f"line 1 of {path}"
                ) from exc
            yield _dead(opts, path, number, raw, str(exc)), done


def _check_columns(columns: Sequence[str], opts: SendOptions, path: Path) -> None:
    named = set(opts.text_columns | opts.exclude) | {
        c for c in (opts.id_column, opts.key_column, opts.ts_column) if c
    }
    unknown = sorted(named - set(columns))
    if unknown:
        raise InputError(
            f"expected columns {unknown} to be in the file, got columns {list(columns)}",
            where=str(path),
        )


_JSON_SPECIAL = {"features", "id", "key", "ts"}


def read_jsonl(path: Path, opts: SendOptions) -> Iterator[Item]:
    builder = _Builder(opts)
    for number, raw, done in _lines(path):
        try:
            text = _utf8(raw)
            try:
                obj = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise _Bad(f"expected a JSON object, got invalid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise _Bad(f"expected a JSON object, got a {type(obj).__name__}")
            if isinstance(obj.get("features"), dict):
                extra = sorted(set(obj) - _JSON_SPECIAL)
                if extra:
                    raise _Bad(f"expected only features, id, key and ts, got fields {extra}")
                record = builder.record(obj["features"], f"line {number}")
                record = msgspec.structs.replace(
                    record,
                    id=_ident(obj.get("id"), "id", "") or record.id,
                    key=_ident(obj.get("key"), "key", "") or record.key,
                    ts=_time(obj["ts"], "") if "ts" in obj else record.ts,
                )
            else:
                record = builder.record(obj, f"line {number}")
            yield record, done
        except _Bad as exc:
            yield _dead(opts, path, number, raw, str(exc)), done


def read_parquet(path: Path, opts: SendOptions) -> Iterator[Item]:
    import pyarrow.parquet as pq

    builder = _Builder(opts)
    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"expected a Parquet file, got {exc}", where=str(path)) from exc
    number = 0
    for batch in file.iter_batches(batch_size=opts.batch):
        for row in batch.to_pylist():
            number += 1
            try:
                yield builder.record(row, f"row {number}"), number
            except _Bad as exc:
                raw = msgspec.json.encode({k: str(v) for k, v in row.items()})
                yield _dead(opts, path, number, raw, str(exc), unit="row"), number


READERS: dict[FileFormat, Callable[[Path, SendOptions], Iterator[Item]]] = {
    "csv": read_csv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}


def check_source(path: Path, opts: SendOptions) -> FileFormat:
    """Check the endpoint name and the file before reading; returns the file's format."""
    check_endpoint(opts.endpoint)
    if not path.is_file():
        raise InputError(expected_got("an existing file", str(path)))
    return detect_format(path, opts.format)


def send_file(
    log: Log, path: Path, opts: SendOptions, progress: Callable[[int], None] | None = None
) -> SendSummary:
    """Stream a file into ``records`` (dead letters into ``deadletter``) in batches.

    ``progress`` is called with the bytes (Parquet: rows) read so far after each batch.
    """
    reader = READERS[check_source(path, opts)]
    summary = SendSummary(file=str(path), endpoint=opts.endpoint)
    values: list[bytes] = []
    keys: list[bytes | None] = []
    dead: list[bytes] = []

    def flush(done: int) -> None:
        if values:
            log.append("records", values, keys if any(keys) else None)
        if dead:
            log.append("deadletter", dead)
        values.clear()
        keys.clear()
        dead.clear()
        if progress:
            progress(done)

    done = 0
    for item, done in reader(path, opts):
        if isinstance(item, ev.Record):
            values.append(ev.encode(item))
            keys.append(item.key.encode() if item.key else None)
            summary.accepted += 1
        else:
            dead.append(ev.encode(item))
            summary.rejected += 1
            if len(summary.reasons) < 5:
                summary.reasons.append(item.reason)
        if len(values) + len(dead) >= opts.batch:
            flush(done)
    flush(done if summary.accepted + summary.rejected else 0)
    return summary
