"""Rows per second of eventml's PMML evaluator against pypmml (JPMML behind py4j), same run.

The model is the 50-tree random forest fixture (sklearn2pmml, 6 classes, depth 6) and the
input is 10,000 rows drawn from its wine inputs. Both engines are warmed up on the whole batch
first; figures are medians of several runs. The last line checks both engines agree::

    .venv/bin/python -m bench.pmml [--rows 10000] [--repeat 5]

pypmml needs Java and is not a dependency; install it only to run this comparison
(``uv pip install pypmml``). Without it the script prints eventml's figures alone.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eventml.models.formats._pmml import load_pmml

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pmml"
MODEL = FIXTURES / "forest50.pmml.gz"
INPUTS = FIXTURES / "inputs_wine.csv"


def load_rows(n: int) -> dict[str, np.ndarray]:
    with INPUTS.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        table = np.array([[float(v) for v in row] for row in reader])
    rng = np.random.default_rng(0)
    picked = table[rng.integers(0, len(table), n)]
    return {name: picked[:, j].copy() for j, name in enumerate(header)}


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = gzip.decompress(MODEL.read_bytes())
    columns = load_rows(args.rows)
    model = load_pmml(data, where=MODEL.name)
    model.predict(columns)  # warm-up
    ours = median_seconds(lambda: model.predict(columns), args.repeat)
    print(
        f"model: {MODEL.name} ({model.function}, {len(model.classes)} classes), rows: {args.rows}"
    )
    print(f"eventml  {args.rows / ours:>12,.0f} rows/s  (median {ours * 1e3:.1f} ms)")
    if importlib.util.find_spec("pypmml") is None or importlib.util.find_spec("pandas") is None:
        print("pypmml   skipped: not installed (uv pip install pypmml pandas; it needs Java)")
        return
    pandas: Any = importlib.import_module("pandas")  # pypmml scores DataFrames
    pypmml: Any = importlib.import_module("pypmml")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forest50.pmml"
        path.write_bytes(data)
        reference = pypmml.Model.fromFile(str(path))
    frame = pandas.DataFrame(columns)
    reference.predict(frame)  # warm-up: JVM start and JIT on the whole batch
    theirs = median_seconds(lambda: reference.predict(frame), max(2, args.repeat // 2))
    print(f"pypmml   {args.rows / theirs:>12,.0f} rows/s  (median {theirs * 1e3:.1f} ms)")
    print(f"ratio    {theirs / ours:>12.1f}x")
    expected = reference.predict(frame)
    ours_p = model.predict(columns).probabilities
    assert ours_p is not None
    gap = max(
        float(np.max(np.abs(expected[f"probability({c})"].to_numpy() - ours_p[:, j])))
        for j, c in enumerate(model.classes)
    )
    print(f"largest probability difference from pypmml: {gap:.1e}")


if __name__ == "__main__":
    main()
