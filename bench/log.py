"""Append and read rates of the embedded log for 200-byte events, next to raw SQLite.

The anchor, measured in the same run: ``executemany`` of 200-byte blobs into a plain
table of a WAL database, batches of 1,000, one transaction per batch. eventml's append
does the same through the log contract (offsets, timestamps, partitions); its read goes
through ``Log.read`` in chunks of 10,000. Each figure is the median of ``--runs`` runs.

    python -m bench.log [--events 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from eventml.config import Settings
from eventml.log._sqlite import SqliteLog

BATCH = 1000
SIZE = 200


def raw_append(path: Path, payloads: list[bytes]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t(v BLOB)")
    start = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t(v) VALUES (?)", [(v,) for v in payloads[i : i + BATCH]])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(payloads) / elapsed


def raw_read(path: Path, n: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    start = time.perf_counter()
    got = 0
    for i in range(0, n, 10_000):
        got += len(
            db.execute("SELECT rowid, v FROM t WHERE rowid > ? LIMIT 10000", (i,)).fetchall()
        )
    elapsed = time.perf_counter() - start
    db.close()
    assert got == n
    return n / elapsed


def log_append(path: Path, payloads: list[bytes]) -> float:
    log = SqliteLog(str(path), Settings(sqlite_sync="normal"))
    log.create_topic("bench", 1)
    start = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        log.append("bench", payloads[i : i + BATCH])
    elapsed = time.perf_counter() - start
    log.close()
    return len(payloads) / elapsed


def log_read(path: Path, n: int) -> float:
    log = SqliteLog(str(path))
    start = time.perf_counter()
    got = 0
    for batch in log.read_all("bench"):
        got += len(batch.values)
    elapsed = time.perf_counter() - start
    log.close()
    assert got == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    payloads = [os.urandom(SIZE) for _ in range(args.events)]
    results: dict[str, list[float]] = {k: [] for k in ("raw_a", "log_a", "raw_r", "log_r")}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            raw_path, log_path = Path(tmp) / "raw.db", Path(tmp) / "log.db"
            results["raw_a"].append(raw_append(raw_path, payloads))
            results["log_a"].append(log_append(log_path, payloads))
            results["raw_r"].append(raw_read(raw_path, args.events))
            results["log_r"].append(log_read(log_path, args.events))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"events: {args.events:,} of {SIZE} bytes, batches of {BATCH}, median of {args.runs}")
    print(f"{'':24}{'events/s':>14}{'vs raw':>10}")
    print(f"{'raw sqlite append':24}{med['raw_a']:>14,.0f}{'1.00x':>10}")
    print(f"{'eventml append':24}{med['log_a']:>14,.0f}{med['log_a'] / med['raw_a']:>9.2f}x")
    print(f"{'raw sqlite read':24}{med['raw_r']:>14,.0f}{'1.00x':>10}")
    print(f"{'eventml read':24}{med['log_r']:>14,.0f}{med['log_r'] / med['raw_r']:>9.2f}x")


if __name__ == "__main__":
    main()
