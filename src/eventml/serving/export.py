"""Prediction events out of the log as JSONL, CSV or Parquet, with the contract's field names.

JSONL keeps each event's nested shape. CSV and Parquet have one column per contract field;
the nested fields (``source``, ``output``, ``features``, ``scores``) are JSON text, so
nothing is lost or retyped (a feature sent as ``7`` stays ``7``).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from eventml import events as ev
from eventml.errors import InputError, expected_got
from eventml.log import Log

TOPIC = "predictions"
FIELDS = (
    "record_id", "endpoint", "key", "ts", "scored_at", "source", "status", "model", "version",
    "digest", "output", "latency_ms", "policy", "route_version", "features", "scores",
)  # fmt: skip
_NESTED = {"source", "output", "features", "scores"}
_json = msgspec.json.Encoder()


def read_predictions(
    log: Log, endpoint: str, since: datetime | None = None
) -> Iterator[ev.Prediction]:
    """Prediction events of one endpoint, partition by partition, in log order."""
    if TOPIC not in log.topics():
        return
    start_ms = int(since.timestamp() * 1000) if since else None
    for batch in log.read_all(TOPIC, start_ms):
        for p in ev.decode_many(batch.values, ev.Prediction):
            if p.endpoint == endpoint and (since is None or p.scored_at >= since):
                yield p


def _flat(p: ev.Prediction) -> dict[str, Any]:
    data: dict[str, Any] = ev.to_builtins(p)
    return {k: _json.encode(data[k]).decode() if k in _NESTED else data[k] for k in FIELDS}


def export_predictions(
    log: Log,
    endpoint: str,
    *,
    since: datetime | None = None,
    fmt: str = "jsonl",
    out: Path | None = None,
) -> int:
    """Write the predictions of ``endpoint`` to ``out`` (stdout if None); returns the count."""
    if fmt not in ("jsonl", "csv", "parquet"):
        raise InputError(expected_got("--format jsonl, csv or parquet", fmt))
    if fmt == "parquet" and out is None:
        raise InputError("expected --out FILE for parquet, got stdout")
    events = read_predictions(log, endpoint, since)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [_flat(p) for p in events]
        schema = pa.schema(
            [(f, pa.int64() if f in ("version", "route_version") else
              pa.float64() if f == "latency_ms" else pa.string()) for f in FIELDS]
        )  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
        return len(rows)
    stream: Any = (
        out.open("w", newline="")
        if out
        else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    )
    count = 0
    try:
        if fmt == "jsonl":
            for p in events:
                data = ev.to_builtins(p)
                data.pop("type", None)
                stream.write(_json.encode(data).decode() + "\n")
                count += 1
        else:
            writer = csv.DictWriter(stream, fieldnames=FIELDS)
            writer.writeheader()
            for p in events:
                writer.writerow(_flat(p))
                count += 1
    finally:
        if out:
            stream.close()
        else:
            stream.detach()
    return count
