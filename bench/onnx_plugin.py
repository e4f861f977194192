"""ONNX plugin overhead: eventml's ``predict_batch`` vs calling onnxruntime directly, batches of 1,000.

The same HGB-100 churn classifier (bench/stream.py ``train``), the same rows, one intra-op
thread each. eventml's call includes everything a caller gets: features mapped by name from
records, canonical outputs (label and per-class probabilities). Two inputs for eventml:
records as plain dicts (the API path) and as encoded feature maps (the engine path, an
``EncodedRows`` built from the batch's list of feature bytes inside the timing).

The three calls take turns batch by batch, each timed in CPU time of the calling thread
(onnxruntime with one intra-op thread computes on it): on a shared machine a pause of the
process lands in wall time, and a burst of load would land on whichever loop ran then.
Turns also give each call the same cache state (the other two just ran). The figures are
medians over every batch of every run; the wall-clock medians are printed beside them.

    python -m bench.onnx_plugin [--rows 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from bench.stream import session, train
from eventml import events as ev
from eventml.demo import FEATURES, churn_customers
from eventml.models._rows import EncodedRows
from eventml.models.formats import get

BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "churn.onnx"
        train(path, seed=1)
        x, _ = churn_customers(args.rows, seed=5)
        matrix = np.column_stack([x[f] for f in FEATURES])
        dicts = [dict(zip(FEATURES, r, strict=True)) for r in matrix.tolist()]
        encoded = [msgspec.msgpack.encode(d) for d in dicts]
        raw32 = matrix.astype(np.float32)
        descriptor = ev.ModelDescriptor(
            name="churn", version=1, digest="-", format="onnx", size=0, created_at=ev.now()
        )
        model = get("onnx").load(path.read_bytes(), descriptor)
        s = session(path)
        name = s.get_inputs()[0].name
        starts = range(0, args.rows, BATCH)
        # the batches as a caller holds them (slicing a list is the harness, not eventml)
        arrays = [raw32[i : i + BATCH] for i in starts]
        dict_batches = [dicts[i : i + BATCH] for i in starts]
        raw_batches = [encoded[i : i + BATCH] for i in starts]
        calls: dict[str, Callable[[int], object]] = {
            "raw": lambda b: s.run(None, {name: arrays[b]}),
            "dicts": lambda b: model.predict_batch(dict_batches[b]),
            "encoded": lambda b: model.predict_batch(EncodedRows(raw_batches[b])),
        }
        cpu: dict[str, list[float]] = {k: [] for k in calls}
        wall: dict[str, list[float]] = {k: [] for k in calls}
        order = list(calls)
        for _ in range(args.runs):
            for b in range(len(starts)):
                order.append(order.pop(0))  # who runs first after whom rotates
                for key in order:
                    t, w = time.thread_time(), time.perf_counter()
                    calls[key](b)
                    cpu[key].append(time.thread_time() - t)
                    wall[key].append(time.perf_counter() - w)
        med = {k: statistics.median(v) for k, v in cpu.items()}
        wmed = {k: statistics.median(v) for k, v in wall.items()}
        print(
            f"rows: {args.rows:,} in batches of {BATCH}, HGB-100 (20 features), {args.runs} runs, "
            "median per batch (CPU time; wall clock in brackets)"
        )
        print(
            f"  raw onnxruntime (float32 array)        {BATCH / med['raw']:>10,.0f} rows/s"
            f"  ({BATCH / wmed['raw']:,.0f})"
        )
        for key, label in (
            ("dicts", "eventml predict_batch (dicts)"),
            ("encoded", "eventml predict_batch (encoded)"),
        ):
            over = (med[key] / med["raw"] - 1) * 100
            wover = (wmed[key] / wmed["raw"] - 1) * 100
            print(
                f"  {label:38} {BATCH / med[key]:>10,.0f} rows/s  overhead {over:5.1f}% "
                f"({wover:.1f}%) (goal ≤ 10%)"
            )


if __name__ == "__main__":
    main()
