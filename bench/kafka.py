"""Stream scoring on Kafka next to the embedded log, and the cost of exactly-once, in one run.

Input: ``--records`` wine records (the red wine rows in turn, keyed by 997 entity keys) on a
``records`` topic of ``--partitions`` partitions; model: the shared wine LinearRegression
PMML. One Kafka broker (``scripts/kafka/broker.sh`` on a free port, or ``--url``), on the
same machine as the workers.

1. engine rate: ``eventml run --group G`` worker processes (1 and 2 on Kafka, 1 on the
   embedded SQLite log as the anchor) over records appended beforehand. Rate = records
   committed between the group's first commit and the moment it caught up, divided by that
   time (the committed offsets are polled every 50 ms; process start and model load are
   not counted).
2. exactly-once vs at-least-once: the same scoring loop written here with the public Log
   API, in this process: poll up to 1,000 records, score them with one ``predict_batch``,
   append one prediction event per record, then either ``with log.transaction(): append +
   commit_offsets`` (exactly-once) or ``log.append(...)`` and ``consumer.commit()``
   (at-least-once: a crash between the two scores the batch again).

    python -m bench.kafka [--records 100000] [--partitions 6] [--url kafka://127.0.0.1:PORT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from eventml import events as ev
from eventml.config import TOPICS, Settings, topic_partitions
from eventml.ingest import SendOptions, send_file
from eventml.log import Log, open_log
from eventml.models.base import LoadedModel
from eventml.models.registry import Registry, load_model, push_model
from eventml.serving.routes import deploy

ROOT = Path(__file__).resolve().parents[1]
WINE = ROOT.parent / "shared" / "data" / "wine"
LR = WINE / "models" / "winequalityLinearRegression.pmml"
FEATURES = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
)  # fmt: skip
OPTS = SendOptions(endpoint="wine", sep=";", id_column="id", key_column="key")
BATCH = 1000


def wine_csv(path: Path, count: int) -> Path:
    rows = [r.split(";")[:11] for r in (WINE / "winequality_red.csv").read_text().splitlines() if r]
    with path.open("w") as f:
        f.write(";".join(["id", "key", *FEATURES]) + "\n")
        for i in range(count):
            f.write(";".join([f"r{i}", f"k{i % 997}", *rows[i % len(rows)]]) + "\n")
    return path


@contextmanager
def broker(folder: Path) -> Iterator[str]:
    """A broker of our own on a free port (``broker.sh``), stopped at the end."""
    sys.path.insert(0, str(ROOT))  # the test helpers pick the port and stop by pid
    from tests.conftest import Broker, free_port_pair, stop_broker

    b = Broker(free_port_pair(), folder / "broker")
    done = subprocess.run(
        [str(ROOT / "scripts" / "kafka" / "broker.sh"), "start"],
        env=b.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"broker.sh start failed:\n{done.stdout}{done.stderr}")
    try:
        yield f"kafka://{b.bootstrap}"
    finally:
        stop_broker(b)


def prepare(url: str, csv: Path, partitions: int) -> None:
    settings = Settings(partitions=partitions)
    with open_log(url, settings) as log:
        if "records" in log.topics() and any(log.end_offsets("records")):
            raise SystemExit(f"expected a log without records, got some at {url}")
        for topic in TOPICS:
            log.create_topic(topic, topic_partitions(topic, settings))
        push_model(log, LR, "wine-lr")
        deploy(log, "wine", "wine-lr")
        send_file(log, csv, OPTS)


def caught_up(log: Log, group: str) -> int:
    """Records the group committed so far (-1 while it lags)."""
    committed = log.committed(group, "records")
    ends = log.end_offsets("records")
    total = sum(committed.values())
    return total if all(committed.get(p, 0) >= e for p, e in enumerate(ends)) else -total - 1


def engine_rate(url: str, workers: int, group: str, count: int) -> float:
    """Records/s of ``workers`` ``eventml run`` processes, first commit to caught up."""
    env = {**os.environ, "EVENTML_LOG": url, "EVENTML_BATCH_MAX": str(BATCH)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "eventml.cli", "run", "--group", group],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        with open_log(url, Settings()) as log:
            first_at, first = 0.0, 0
            while True:
                state = caught_up(log, group)
                now = time.perf_counter()
                done = state if state >= 0 else -state - 1
                if done and not first_at:
                    first_at, first = now, done
                if state >= 0 and first_at:
                    if state != count:
                        raise SystemExit(f"expected {count} committed, got {state}")
                    return (count - first) / (now - first_at)
                if any(p.poll() is not None for p in procs):
                    raise SystemExit(f"a worker of group {group} exited early")
                time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)


def scoring_loop(url: str, group: str, count: int, exactly_once: bool) -> float:
    """The loop written with the public Log API; records/s in this process."""
    with open_log(url, Settings()) as log:
        registry = Registry.from_log(log)
        d = registry.resolve("wine-lr")
        model: LoadedModel = load_model(registry.descriptor_with_payload(log, d.name, d.version))
        score = scorer(model, d)
        with log.consumer(group, ["records"]) as consumer:
            consumer.poll(1, 5.0)  # joined, with its partitions assigned
            for key in consumer.positions():
                consumer.seek(*key, 0)
            scored = 0
            start = time.perf_counter()
            while scored < count:
                batches = consumer.poll(BATCH, 1.0)
                if not batches:
                    continue
                preds = [p for b in batches for p in score(b.partition, b.offsets, b.values)]
                values = [ev.encode(p) for p in preds]
                keys = [p.key.encode() if p.key else None for p in preds]
                offsets = {(b.topic, b.partition): b.next_offset for b in batches}
                if exactly_once:
                    with log.transaction() as tx:
                        tx.append("predictions", values, keys)
                        tx.commit_offsets(consumer, offsets)
                else:
                    log.append("predictions", values, keys)
                    consumer.commit(offsets)
                scored += len(preds)
            elapsed = time.perf_counter() - start
        model.close()
    return count / elapsed


def scorer(
    model: LoadedModel, d: ev.ModelDescriptor
) -> Callable[[int, Sequence[int], Sequence[bytes]], list[ev.Prediction]]:
    def score(
        partition: int, offsets: Sequence[int], values: Sequence[bytes]
    ) -> list[ev.Prediction]:
        records: list[ev.Record] = ev.decode_many(values, ev.Record)
        start = time.perf_counter_ns()
        outputs = model.predict_batch([r.features for r in records])
        per_record = (time.perf_counter_ns() - start) / 1e6 / len(records)
        now = ev.now()
        return [
            ev.Prediction(
                record_id=r.id,
                endpoint=r.endpoint,
                key=r.key,
                ts=r.ts,
                scored_at=now,
                source=ev.Source(topic="records", partition=partition, offset=off),
                status="ok",
                model=d.name,
                version=d.version,
                digest=d.digest,
                output=out,
                latency_ms=per_record,
                policy="champion",
                route_version=1,
                features=r.features,
                scores=[],
            )
            for r, off, out in zip(records, offsets, outputs, strict=True)
        ]

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--url", help="kafka://host:port of a running broker (default: start one)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eventml-bench-kafka-"))
    try:
        csv = wine_csv(tmp / "wine.csv", args.records)
        embedded = str(tmp / "embedded")
        prepare(embedded, csv, 1)
        with broker(tmp) if args.url is None else _given(args.url) as url:
            prepare(url, csv, args.partitions)
            rows = [
                ("engine, embedded SQLite log, 1 worker", engine_rate(embedded, 1, "e1", args.records)),
                ("engine, Kafka, 1 worker", engine_rate(url, 1, "k1", args.records)),
                ("engine, Kafka, 2 workers", engine_rate(url, 2, "k2", args.records)),
                ("loop, Kafka, exactly-once (transaction)", scoring_loop(url, "eos", args.records, True)),
                ("loop, Kafka, at-least-once (append+commit)", scoring_loop(url, "alo", args.records, False)),
                ("loop, embedded, exactly-once (transaction)", scoring_loop(embedded, "eos", args.records, True)),
                ("loop, embedded, at-least-once (append+commit)", scoring_loop(embedded, "alo", args.records, False)),
            ]  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    anchor = rows[0][1]
    print(
        f"records: {args.records:,} wine rows, LinearRegression PMML, batches of {BATCH}, "
        f"{args.partitions} Kafka partitions, {os.cpu_count()} cores"
    )
    print(f"{'':48}{'records/s':>11}{'vs embedded':>13}")
    for label, rate in rows:
        print(f"{label:48}{rate:>11,.0f}{rate / anchor:>12.2f}x")
    eos, alo = rows[3][1], rows[4][1]
    print(f"exactly-once / at-least-once on Kafka: {eos / alo:.2f}")


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
