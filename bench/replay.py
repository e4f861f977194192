"""Replay scoring rate next to raw onnxruntime batch scoring of the same model and rows.

Setup (not timed): ``--rows`` churn prediction events on a ``memory://`` log, labels for
all of them, and a gradient-boosting model trained on 5,000 of them (``eventml train``'s
ONNX export). Timed, each the median of ``--runs``:

- anchor: ``session.run`` over the same rows as one float32 matrix in batches of 20,000
  (the matrix built beforehand, so only scoring is timed);
- replay scoring: :func:`eventml.learning.score.score` over the replay's view table (the
  vectorized stage of ``eventml replay``: columns to a matrix, batches, outputs);
- replay end to end: :func:`eventml.learning.replay.replay` (fold the log into the view,
  join labels in DuckDB, score, compute every metric and segment).

    python -m bench.replay [--rows 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from bench.view import labelled_log  # the same setup
from eventml.config import Settings
from eventml.learning.replay import replay
from eventml.learning.score import matrix, score
from eventml.learning.train import train
from eventml.learning.views import FEATURE_PREFIX, ViewSpec, build_view
from eventml.log import open_log
from eventml.models.registry import Registry, load_model

BATCH = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    log = open_log("memory://", Settings())
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
    full: list[float] = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for i in range(0, len(x), BATCH):
            session.run(None, {feed: x[i : i + BATCH]})
        raw.append(len(x) / (time.perf_counter() - start))
        start = time.perf_counter()
        score(model, table, name)
        scored.append(len(x) / (time.perf_counter() - start))
        start = time.perf_counter()
        replay(log, name, "churn")
        full.append(len(x) / (time.perf_counter() - start))
    r, s, f = (statistics.median(v) for v in (raw, scored, full))
    print(
        f"rows: {len(x):,}, {len(model.feature_names)} features, model {name} (hgb, ONNX), median of {args.runs}"
    )
    print(f"{'':34}{'rows/s':>14}{'vs raw':>10}")
    print(f"{'raw onnxruntime session.run':34}{r:>14,.0f}{'1.00x':>10}")
    print(f"{'replay scoring (score())':34}{s:>14,.0f}{s / r:>9.2f}x")
    print(f"{'replay end to end (replay())':34}{f:>14,.0f}{f / r:>9.2f}x")


if __name__ == "__main__":
    main()
