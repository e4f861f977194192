"""Replay scoring rate next to raw onnxruntime batch scoring of the same model and rows.

Setup (not timed): ``--rows`` churn prediction events on an embedded (SQLite) log in a
temporary folder, labels for all of them, and a gradient-boosting model trained on 5,000
of them (``eventml train``'s ONNX export). Timed, each the median of ``--runs``:

- anchor: ``session.run`` over the same rows as one float32 matrix in batches of 20,000
  (the matrix built beforehand, so only scoring is timed);
- replay scoring: :func:`eventml.learning.score.score` over the replay's view table (the
  vectorized stage of ``eventml replay``: columns to a matrix, batches, outputs);
- replay end to end, cold: :func:`eventml.learning.replay.replay` with no stored fold (the
  folder of stored folds is deleted first): read and decode every prediction and label,
  store the fold, join labels in DuckDB, score, compute every metric and segment;
- replay end to end, warm: ``replay()`` again after ``--new`` more predictions and their
  labels were appended, plus a relabel of ``--new`` earlier rows: the stored fold is
  brought up to date from the offsets it covers, then the same join, scoring and metrics.

Rates are rows replayed per second; the warm runs replay the appended rows too.

    python -m bench.replay [--rows 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.view import BASE, labelled_log  # the same setup
from eventml import events as ev
from eventml.config import Settings
from eventml.demo import FEATURES, churn_customers
from eventml.learning.replay import replay
from eventml.learning.score import matrix, score
from eventml.learning.train import train
from eventml.learning.views import FEATURE_PREFIX, ViewSpec, build_view
from eventml.log import Log, open_log
from eventml.models.registry import Registry, load_model

BATCH = 20_000


def append_more(log: Log, start: int, n: int) -> None:
    """``n`` more churn predictions after row ``start``, labelled, and a relabel of ``n`` old rows."""
    x, y = churn_customers(start + n, 11)
    preds, labels = [], []
    for i in range(start, start + n):
        ts = BASE + timedelta(seconds=i)
        rid = f"r{i:08d}"
        preds.append(ev.encode(ev.Prediction(
            record_id=rid, endpoint="churn", key=f"c{i:08d}", ts=ts, scored_at=ts,
            status="no_model", features={f: float(x[f][i]) for f in FEATURES},
        )))  # fmt: skip
        labels.append(ev.encode(ev.Label(record_id=rid, value=int(y[i]), ts=ts)))
        labels.append(ev.encode(ev.Label(record_id=f"r{i - start:08d}", value=1, ts=ts)))
    log.append("predictions", preds)
    log.append("labels", labels, partition=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new", type=int, default=2_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="eventml-bench-replay-"))
    try:
        run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, folder: Path) -> None:
    log = open_log(str(folder), Settings())
    folds = folder / "log.sqlite.views"  # where the embedded log's folds are stored
    first_ts = labelled_log(log, args.rows)
    small = build_view(log, ViewSpec(endpoint="churn", until=first_ts(5_000)))
    ref = train(log, "churn", small, "churn", algo="hgb").pushed.descriptor
    name = f"{ref.name}:{ref.version}"
    registry = Registry.from_log(log)
    model = load_model(registry.descriptor_with_payload(log, ref.name, ref.version))
    table = build_view(log, ViewSpec(endpoint="churn", labelled=False, validation=0)).table
    x = matrix(table, [FEATURE_PREFIX + f for f in model.feature_names]).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        registry.descriptor_with_payload(log, ref.name, ref.version).payload,
        opts,
        providers=["CPUExecutionProvider"],
    )
    feed = session.get_inputs()[0].name
    raw: list[float] = []
    scored: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    total = args.rows
    for _ in range(args.runs):
        start = time.perf_counter()
        for i in range(0, len(x), BATCH):
            session.run(None, {feed: x[i : i + BATCH]})
        raw.append(len(x) / (time.perf_counter() - start))
        start = time.perf_counter()
        score(model, table, name)
        scored.append(len(x) / (time.perf_counter() - start))
        shutil.rmtree(folds, ignore_errors=True)
        start = time.perf_counter()
        rows = replay(log, name, "churn").metrics["rows"]
        cold.append(rows / (time.perf_counter() - start))
        append_more(log, total, args.new)
        total += args.new
        start = time.perf_counter()
        rows = replay(log, name, "churn").metrics["rows"]
        warm.append(rows / (time.perf_counter() - start))
        assert rows == total
    r, s, c, w = (statistics.median(v) for v in (raw, scored, cold, warm))
    print(
        f"rows: {len(x):,}, {len(model.feature_names)} features, model {name} (hgb, ONNX), "
        f"embedded log, median of {args.runs}"
    )
    print(f"{'':34}{'rows/s':>14}{'vs raw':>10}")
    print(f"{'raw onnxruntime session.run':34}{r:>14,.0f}{'1.00x':>10}")
    print(f"{'replay scoring (score())':34}{s:>14,.0f}{s / r:>9.2f}x")
    print(f"{'replay end to end, cold':34}{c:>14,.0f}{c / r:>9.2f}x")
    print(f"{'replay end to end, warm':34}{w:>14,.0f}{w / r:>9.2f}x")
    print(f"(cold: no stored fold; warm: stored fold + {args.new:,} new predictions and labels)")


if __name__ == "__main__":
    main()
