"""Training-view build time for labelled churn predictions, next to just decoding the same events.

Setup (not timed): ``--rows`` prediction events (20 features each) and one label per
event on a ``memory://`` log (no stored folds: every build folds the whole log, cold). Timed, each the median of ``--runs``:

- anchor: read every prediction and label from the log and decode them with msgspec
  (``decode_many``), the least any view over these events must do;
- ``build_view``: read, decode, load into Arrow, join labels in DuckDB, build the feature
  columns and the JSON columns, split by time and hash the rows.

    python -m bench.view [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from eventml import events as ev
from eventml.config import Settings
from eventml.demo import FEATURES, churn_customers
from eventml.learning.views import ViewSpec, build_view
from eventml.log import Log, open_log

BASE = ev.parse_time("2026-01-01T00:00:00Z")
CHUNK = 50_000


def labelled_log(log: Log, n: int, seed: int = 3) -> Callable[[int], datetime]:
    """Append ``n`` churn prediction events (one a second) and a label for each; returns i → ts."""
    x, y = churn_customers(n, seed)
    cols = [x[f].tolist() for f in FEATURES]
    labels = y.tolist()
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        preds = []
        lbls = []
        for i in range(start, stop):
            ts = BASE + timedelta(seconds=i)
            rid = f"r{i:08d}"
            preds.append(ev.encode(ev.Prediction(
                record_id=rid, endpoint="churn", key=f"c{i:08d}", ts=ts, scored_at=ts,
                status="no_model", features={f: c[i] for f, c in zip(FEATURES, cols, strict=True)},
            )))  # fmt: skip
            lbls.append(ev.encode(ev.Label(record_id=rid, value=labels[i], ts=ts)))
        log.append("predictions", preds)
        log.append("labels", lbls, partition=0)
    return lambda i: BASE + timedelta(seconds=i)


def decode_all(log: Log) -> int:
    n = 0
    for topic, kind in (("predictions", ev.Prediction), ("labels", ev.Label)):
        for batch in log.read_all(topic):
            n += len(ev.decode_many(batch.values, kind))
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    log = open_log("memory://", Settings())
    start = time.perf_counter()
    labelled_log(log, args.rows)
    setup = time.perf_counter() - start
    anchor: list[float] = []
    view: list[float] = []
    rows = 0
    for _ in range(args.runs):
        start = time.perf_counter()
        assert decode_all(log) == 2 * args.rows
        anchor.append(time.perf_counter() - start)
        start = time.perf_counter()
        built = build_view(log, ViewSpec(endpoint="churn"))
        rows = built.rows
        assert len(built.hash) == 64  # the hash is computed on first use: time it too
        view.append(time.perf_counter() - start)
    assert rows == args.rows
    a, v = statistics.median(anchor), statistics.median(view)
    print(f"labelled predictions: {args.rows:,} (setup {setup:.0f} s), median of {args.runs}")
    print(f"{'':34}{'seconds':>10}{'rows/s':>12}{'vs decode':>11}")
    print(f"{'decode predictions + labels':34}{a:>10.2f}{args.rows / a:>12,.0f}{'1.00x':>11}")
    print(f"{'build_view':34}{v:>10.2f}{args.rows / v:>12,.0f}{v / a:>10.2f}x")


if __name__ == "__main__":
    main()
