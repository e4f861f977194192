"""ONNX plugin overhead: eventml's ``predict_batch`` vs calling onnxruntime directly, batches of 1,000.

The same HGB-100 churn classifier (bench/stream.py ``train``), the same rows, one intra-op
thread each. eventml's call includes everything a caller gets: features mapped by name from
records, canonical outputs (label and per-class probabilities). Two inputs for eventml:
records as plain dicts (the API path) and as encoded feature maps (the engine path).

    python -m bench.onnx_plugin [--rows 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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
        rates: dict[str, list[float]] = {"raw": [], "dicts": [], "encoded": []}
        for _ in range(args.runs):
            t = time.perf_counter()
            for i in range(0, args.rows, BATCH):
                s.run(None, {name: raw32[i : i + BATCH]})
            rates["raw"].append(args.rows / (time.perf_counter() - t))
            t = time.perf_counter()
            for i in range(0, args.rows, BATCH):
                model.predict_batch(dicts[i : i + BATCH])
            rates["dicts"].append(args.rows / (time.perf_counter() - t))
            t = time.perf_counter()
            for i in range(0, args.rows, BATCH):
                model.predict_batch(EncodedRows(encoded[i : i + BATCH]))
            rates["encoded"].append(args.rows / (time.perf_counter() - t))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"rows: {args.rows:,} in batches of {BATCH}, HGB-100 (20 features), median of {args.runs}"
        )
        print(f"  raw onnxruntime (float32 array)        {med['raw']:>10,.0f} rows/s")
        for key, label in (
            ("dicts", "eventml predict_batch (dicts)"),
            ("encoded", "eventml predict_batch (encoded)"),
        ):
            over = (med["raw"] / med[key] - 1) * 100
            print(f"  {label:38} {med[key]:>10,.0f} rows/s  overhead {over:5.1f}% (goal ≤ 10%)")


if __name__ == "__main__":
    main()
