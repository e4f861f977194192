"""Rendezvous figures: per-request overhead over calling the champion directly, and deadline precision.

1. Overhead: an endpoint routed to one ONNX model (the churn HGB-100 classifier); the median
   of ``Rendezvous.predict(record)`` minus the median of ``model.predict_batch([features])``
   on the same records, in-process, logging left out (a sink that drops events), so the
   figure is the rendezvous itself: route lookup, scoring call, decision, answer and the
   prediction event handed to the sink. The garbage collector runs as Python sets it by
   default (this bench neither disables nor tunes it; ``eventml serve`` raises the
   young-generation threshold and freezes what it loaded at start, which only helps).
   Also: 100 records in one ``Rendezvous.predict_many`` call against one
   ``predict_batch`` of the 100 rows (one model call, one prediction event per record).
2. Deadline precision: three latency-injected models all slower than the SLA (200 ms vs
   50 ms) under the ``first`` decider; p99 of (answer time − SLA) over the requests.

    python -m bench.rendezvous [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from bench.stream import train  # the same churn model
from eventml import events as ev
from eventml.config import Settings
from eventml.demo import FEATURES, churn_customers
from eventml.log import open_log
from eventml.models.registry import push_model
from eventml.serving.online import Rendezvous
from eventml.serving.routes import deploy
from eventml.serving.spec import RouteSpec, Step

T = TypeVar("T")


def paired(
    items: Sequence[T], first: Callable[[T], object], second: Callable[[T], object]
) -> tuple[float, float]:
    """Median µs of ``first`` and of ``second``, called in turn on each item."""
    a, b = [], []
    for item in items:
        t0 = time.perf_counter_ns()
        first(item)
        t1 = time.perf_counter_ns()
        second(item)
        t2 = time.perf_counter_ns()
        a.append((t1 - t0) / 1000)
        b.append((t2 - t1) / 1000)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--deadline-requests", type=int, default=100)
    args = parser.parse_args()
    os.environ["EVENTML_TESTING"] = "1"
    with tempfile.TemporaryDirectory() as tmp, open_log("memory://", Settings()) as log:
        model_path = Path(tmp) / "churn.onnx"
        train(model_path, seed=1)
        push_model(log, model_path, "churn")
        deploy(log, "churn", "churn")
        x, _ = churn_customers(args.requests, seed=3)
        rows = [
            dict(zip(FEATURES, r, strict=True))
            for r in np.column_stack([x[f] for f in FEATURES]).tolist()
        ]
        now = ev.now()
        records = [
            ev.Record(id=f"r{i}", endpoint="churn", ts=now, features=row)
            for i, row in enumerate(rows)
        ]
        rdv = Rendezvous(log, sink=lambda r, p: None)
        _, model = rdv.model("churn:1")
        for rec in records[:200]:  # warm up both paths
            model.predict_batch([rec.features])
            rdv.predict(rec)
        d, r = paired(records, lambda rec: model.predict_batch([rec.features]), rdv.predict)
        print(
            f"requests: {args.requests:,}, one ONNX model (HGB-100, 20 features), in-process, logging off"
        )
        print(f"  champion called directly: median {d:8.1f} µs")
        print(
            f"  through the rendezvous:   median {r:8.1f} µs   overhead {r - d:6.1f} µs (goal ≤ 50)"
        )
        chunks = [records[i : i + 100] for i in range(0, len(records) - 99, 100)]
        bd, br = paired(
            chunks, lambda chunk: model.predict_batch([r.features for r in chunk]),
            rdv.predict_many,
        )  # fmt: skip
        print(
            f"  100 records: predict_batch {bd:8.1f} µs, predict_many {br:8.1f} µs "
            f"({(br - bd) / 100:.1f} µs per record over the model)"
        )

        for name in ("m1", "m2", "m3"):
            spec = Path(tmp) / f"{name}.json"
            spec.write_text(json.dumps({"wraps": "churn:1", "latency_ms": 200}))
            push_model(log, spec, name, format="test-latency")
        schedule = [Step(model="m3"), Step(model="m2", after_ms=20), Step(model="m1", after_ms=40)]
        deploy(
            log,
            "churn",
            spec=RouteSpec(schedule=schedule, sla_ms=50, decider="first", default={"label": "0"}),
        )
        rdv.sync(wait=True)
        late = []
        for rec in records[: args.deadline_requests]:
            answer = rdv.predict(rec)
            assert answer.status == "not_processed", answer
            late.append(answer.latency_ms - 50)
        rdv.close()
        p99 = float(np.percentile(late, 99))
        print(f"deadline: {args.deadline_requests} requests, every model 200 ms, SLA 50 ms")
        print(
            f"  answer time − SLA: median {statistics.median(late):.2f} ms, p99 {p99:.2f} ms (goal ≤ 5)"
        )


if __name__ == "__main__":
    main()
