"""Appending labels to a long log: the check that every label names a prediction.

Setup (not timed): ``--rows`` churn prediction events and their labels on an embedded
(SQLite) log in a temporary folder (bench/view.py's ``labelled_log``). Timed, each the
median of ``--runs``:

- anchor: read every prediction on the log and decode its id, entity and time (the
  check without a kept fold must at least do this for each append);
- ``append_labels`` of ``--labels`` relabels, cold: the stored fold of what was predicted
  deleted first, so the check folds every prediction;
- the same, warm: the fold kept by the previous append (brought up to date from there).

    python -m bench.labels [--rows 200000] [--labels 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from bench.view import labelled_log
from eventml import events as ev
from eventml.config import Settings
from eventml.learning.labels import append_labels
from eventml.log import open_log


class _Seen(msgspec.Struct, tag="Prediction"):
    record_id: str
    endpoint: str
    ts: ev.UtcTime
    key: str | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="eventml-bench-labels-"))
    try:
        log = open_log(str(folder), Settings())
        labelled_log(log, args.rows)
        decode = msgspec.msgpack.Decoder(_Seen).decode
        anchor: list[float] = []
        cold: list[float] = []
        warm: list[float] = []
        for run in range(args.runs):
            start = time.perf_counter()
            seen = sum(len([decode(v) for v in b.values]) for b in log.read_all("predictions"))
            anchor.append(time.perf_counter() - start)
            assert seen == args.rows
            for times in (cold, warm):
                if times is cold:
                    for path in (folder / "log.sqlite.views").glob("predicted*"):
                        path.unlink()
                first = (run * 2 + len(times)) * args.labels % args.rows
                labels = [
                    ev.Label(record_id=f"r{i:08d}", value=1, ts=ev.now())
                    for i in range(first, first + args.labels)
                ]
                start = time.perf_counter()
                assert append_labels(log, labels).appended == args.labels
                times.append(time.perf_counter() - start)
        a, c, w = (statistics.median(v) for v in (anchor, cold, warm))
        print(
            f"predictions on the log: {args.rows:,}; {args.labels} labels per append, "
            f"median of {args.runs}"
        )
        print(f"{'':44}{'seconds':>10}{'vs decode':>11}")
        print(f"{'decode every prediction (anchor)':44}{a:>10.3f}{'1.00x':>11}")
        print(f"{'append_labels, cold (no kept fold)':44}{c:>10.3f}{c / a:>10.2f}x")
        print(f"{'append_labels, warm (kept fold)':44}{w:>10.3f}{w / a:>10.2f}x")
        log.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
