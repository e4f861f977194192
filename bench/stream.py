"""Stream scoring: the engine next to a bare loop and raw onnxruntime, in the same run.

Model: HistGradientBoostingClassifier(max_iter=100) on 20 numeric churn features
(eventml.demo.churn_customers), exported to ONNX with skl2onnx. One intra-op thread.

1. engine: ``--records`` churn records on the embedded log, scored exactly-once by
   :class:`eventml.serving.engine.Engine` (ids, versions, features as seen, one transaction
   per micro-batch of 1,000).
2. bare loop (anchor): the same rows as packed float32 blobs in a plain SQLite file (WAL);
   loop: read 1,000 blobs, one onnxruntime call, write the probabilities, store the offset,
   commit. No ids, no versions, no events.
3. raw onnxruntime (anchor): batch-1,000 calls over the same rows in memory.
4. hot swap: ``eventml run`` in its own process while this one appends records at a steady
   rate; halfway, a new model version is deployed. Record latency = prediction append time
   minus record append time; p99 in steady state vs the two seconds after the deploy.
   The throughput runs' files are deleted and written back first (``os.sync``): otherwise
   their write-back, still under way during the swap, stalls the engine's commits (p99
   66-101 ms in three of five runs on 2026-11-21).

    python -m bench.stream [--records 1000000] [--runs 3] [--swap-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingClassifier

from eventml import events as ev
from eventml.config import Settings
from eventml.demo import FEATURES, churn_customers
from eventml.log import open_log
from eventml.models.registry import push_model
from eventml.serving.engine import Engine
from eventml.serving.routes import deploy

BATCH = 1000


def train(path: Path, seed: int) -> HistGradientBoostingClassifier:
    """The churn HGB-100 written to ``path`` as ONNX; returns the fitted estimator."""
    x, y = churn_customers(20_000, seed=seed)
    matrix = np.column_stack([x[f] for f in FEATURES]).astype(np.float32)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(matrix, y)
    onx = to_onnx(model, matrix[:1], options={"zipmap": False}, target_opset=17)
    meta = onx.metadata_props.add()
    meta.key, meta.value = "feature_names", ev.to_json(list(FEATURES)).decode()  # type: ignore[arg-type]
    path.write_bytes(onx.SerializeToString())
    return model


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def records(n: int) -> tuple[np.ndarray, list[bytes]]:
    x, _ = churn_customers(n, seed=11)
    matrix = np.column_stack([x[f] for f in FEATURES])
    now = ev.now()
    values = [
        ev.encode(ev.Record(id=f"r{i}", endpoint="churn", key=f"c{i % 50_000}", ts=now,
                            features=dict(zip(FEATURES, row, strict=True))))
        for i, row in enumerate(matrix.tolist())
    ]  # fmt: skip
    return matrix.astype(np.float32), values


def raw_ort(model: Path, matrix: np.ndarray) -> float:
    s = session(model)
    name = s.get_inputs()[0].name
    start = time.perf_counter()
    for i in range(0, len(matrix), BATCH):
        s.run(None, {name: matrix[i : i + BATCH]})
    return len(matrix) / (time.perf_counter() - start)


def bare_loop(model: Path, matrix: np.ndarray, folder: Path) -> float:
    db = sqlite3.connect(folder / "bare.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE inputs(off INTEGER PRIMARY KEY, x BLOB)")
    db.execute("CREATE TABLE outputs(off INTEGER PRIMARY KEY, p BLOB)")
    db.execute("CREATE TABLE offsets(grp TEXT PRIMARY KEY, next INTEGER)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO inputs VALUES (?, ?)", enumerate(r.tobytes() for r in matrix))
    db.execute("COMMIT")
    s = session(model)
    name = s.get_inputs()[0].name
    width = matrix.shape[1]
    start = time.perf_counter()
    pos = 0
    while True:
        rows = db.execute(
            "SELECT off, x FROM inputs WHERE off >= ? ORDER BY off LIMIT ?", (pos, BATCH)
        ).fetchall()
        if not rows:
            break
        x = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), width)
        _, probs = s.run(None, {name: x})
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO outputs VALUES (?, ?)",
            zip((r[0] for r in rows), (p.tobytes() for p in probs), strict=True),
        )
        pos = rows[-1][0] + 1
        db.execute("INSERT OR REPLACE INTO offsets VALUES ('bare', ?)", (pos,))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(matrix) / elapsed


def engine_rate(model: Path, values: list[bytes], folder: Path) -> float:
    settings = Settings(batch_max=BATCH, batch_ms=5)
    with open_log(str(folder / "log"), settings) as log:
        push_model(log, model, "churn-hgb")
        deploy(log, "churn", "churn-hgb")
        for i in range(0, len(values), 10_000):
            log.append("records", values[i : i + 10_000])
        engine = Engine(log, settings)
        start = time.perf_counter()
        scored = engine.run(until_idle=True)
        elapsed = time.perf_counter() - start
        engine.close()
        assert scored == len(values), (scored, len(values))
    return len(values) / elapsed


def hot_swap(model_a: Path, model_b: Path, folder: Path, seconds: float) -> dict[str, Any]:
    """p99 record latency, steady state vs the two seconds after deploying a new version."""
    data = str(folder / "swap")
    settings = Settings(batch_max=BATCH, batch_ms=5)
    _, values = records(200_000)
    with open_log(data, settings) as log:
        push_model(log, model_a, "churn-hgb")
        push_model(log, model_b, "churn-hgb")
        deploy(log, "churn", "churn-hgb:1")
    env = {**os.environ, "EVENTML_LOG": data, "EVENTML_BATCH_MS": "5"}
    engine = subprocess.Popen([sys.executable, "-m", "eventml.cli", "run"], env=env)
    deployed_ms = 0
    try:
        time.sleep(3.0)  # the engine loads its model
        with open_log(data, settings) as log:
            rate, chunk = 20_000, 100  # records per second, per append
            start = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - start) < seconds:
                if not deployed_ms and elapsed >= seconds / 2:
                    deploy(log, "churn", "churn-hgb:2")
                    deployed_ms = time.time_ns() // 1_000_000
                i = sent % (len(values) - chunk)
                log.append("records", values[i : i + chunk])
                sent += chunk
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
            time.sleep(2.0)  # let the engine drain
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=30)
    with open_log(data, settings) as log:
        appended = {
            (b.partition, off): ts
            for b in log.read_all("records")
            for off, ts in zip(b.offsets, b.timestamps, strict=True)
        }
        steady: list[int] = []
        swap: list[int] = []
        failed = 0
        versions: set[int | None] = set()
        for b in log.read_all("predictions"):
            for ts, p in zip(b.timestamps, ev.decode_many(b.values, ev.Prediction), strict=True):
                assert p.source is not None
                latency = ts - appended[(p.source.partition, p.source.offset)]
                failed += p.status != "ok"
                versions.add(p.version)
                t = appended[(p.source.partition, p.source.offset)]
                if deployed_ms <= t < deployed_ms + 2000:
                    swap.append(latency)
                elif t < deployed_ms - 1000:
                    steady.append(latency)

    def p99(xs: list[int]) -> float:
        return float(np.percentile(xs, 99)) if xs else float("nan")

    return {"steady_p99_ms": p99(steady), "swap_p99_ms": p99(swap), "failed": failed,
            "versions": sorted(v for v in versions if v is not None), "steady_n": len(steady),
            "swap_n": len(swap)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--swap-seconds", type=float, default=10.0, help="0: no hot-swap run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_a, model_b = root / "a.onnx", root / "b.onnx"
        train(model_a, seed=1)
        train(model_b, seed=2)
        matrix, values = records(args.records)
        rates: dict[str, list[float]] = {"engine": [], "bare": [], "raw": []}
        for run in range(args.runs):
            folder = root / f"run{run}"
            folder.mkdir()
            rates["raw"].append(raw_ort(model_a, matrix))
            rates["bare"].append(bare_loop(model_a, matrix, folder))
            rates["engine"].append(engine_rate(model_a, values, folder))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"records: {args.records:,}, HGB-100 churn (20 features, ONNX), median of {args.runs}"
        )
        print(f"{'':28}{'records/s':>12}{'vs bare':>10}")
        for key, label in (
            ("engine", "eventml engine (exactly-once)"),
            ("bare", "bare loop (anchor)"),
            ("raw", "raw onnxruntime batch-1000"),
        ):
            print(f"{label:28}{med[key]:>12,.0f}{med[key] / med['bare']:>9.2f}x")
        if args.swap_seconds <= 0:
            return
        for run in range(args.runs):
            shutil.rmtree(root / f"run{run}")
        os.sync()
        swap = hot_swap(model_a, model_b, root, args.swap_seconds)
        ratio = (
            swap["swap_p99_ms"] / swap["steady_p99_ms"] if swap["steady_p99_ms"] else float("nan")
        )
        print(
            f"hot swap under load: p99 steady {swap['steady_p99_ms']:.1f} ms ({swap['steady_n']} records), "
            f"p99 after deploy {swap['swap_p99_ms']:.1f} ms ({swap['swap_n']} records), ratio {ratio:.2f}, "
            f"failed {swap['failed']}, versions {swap['versions']}"
        )


if __name__ == "__main__":
    main()
