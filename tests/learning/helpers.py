"""Shared builders for the learning tests: churn predictions written straight to a log."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from eventml import events as ev
from eventml.demo import FEATURES, churn_customers
from eventml.log import Log
from eventml.serving.engine import Engine

BASE = ev.parse_time("2026-01-01T00:00:00Z")


def at(minutes: int) -> datetime:
    return BASE + timedelta(minutes=minutes)


def churn_records(start: int, stop: int, seed: int = 3) -> tuple[list[ev.Record], np.ndarray]:
    """Customers ``start..stop`` of the generator's draw, one record a minute, keyed by customer."""
    x, y = churn_customers(stop, seed)
    records = [
        ev.Record(
            id=f"r{i:06d}",
            endpoint="churn",
            key=f"c{i:06d}",
            ts=at(i),
            features={f: float(x[f][i]) for f in FEATURES},
        )
        for i in range(start, stop)
    ]
    return records, y[start:stop]


def send(log: Log, records: list[ev.Record]) -> None:
    log.append("records", [ev.encode(r) for r in records])


def run_engine(log: Log) -> int:
    engine = Engine(log, log.settings)
    try:
        return engine.run(until_idle=True)
    finally:
        engine.close()


def predictions(log: Log) -> list[ev.Prediction]:
    out: list[ev.Prediction] = []
    for batch in log.read_all("predictions"):
        out.extend(ev.decode_many(batch.values, ev.Prediction))
    return out


def write_predictions(
    log: Log, n: int, endpoint: str = "churn", seed: int = 3
) -> list[ev.Prediction]:
    """``n`` prediction events (status no_model) appended directly, one a minute."""
    records, _ = churn_records(0, n, seed)
    preds = [
        ev.Prediction(
            record_id=r.id,
            endpoint=endpoint,
            key=r.key,
            ts=r.ts,
            scored_at=r.ts,
            status="no_model",
            features=r.features,
        )
        for r in records
    ]
    log.append("predictions", [ev.encode(p) for p in preds])
    return preds


def record_labels(
    ids: list[str], values: list[int] | np.ndarray, ts: datetime = BASE
) -> list[ev.Label]:
    return [ev.Label(record_id=i, value=int(v), ts=ts) for i, v in zip(ids, values, strict=True)]
