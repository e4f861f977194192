"""A forest's results read two ways: gathered from the leaves where read (every input
present: the compiled walk, every tree ends on a scored leaf) and built per tree (a row
with a missing input sends the batch down the general walk, and some trees there have no
prediction). Every other row must come out the same, bit for bit, for every method."""

from __future__ import annotations

import csv
import gzip
import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eventml import _kernels
from eventml.models.formats._pmml import load_pmml

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pmml"
METHODS = ["average", "weightedAverage", "majorityVote", "weightedMajorityVote", "selectFirst"]


def forest(method: str) -> Any:
    """The 50-tree forest fixture with another method and unequal segment weights."""
    text = gzip.decompress((FIXTURES / "forest50.pmml.gz").read_bytes()).decode()
    assert text.count('multipleModelMethod="average"') == 1
    text = text.replace('multipleModelMethod="average"', f'multipleModelMethod="{method}"')
    text, count = re.subn(
        r'<Segment id="(\d+)">',
        lambda m: f'<Segment id="{m[1]}" weight="{1 + int(m[1]) % 7 * 0.37:.2f}">',
        text,
    )
    assert count == 50
    return load_pmml(text.encode(), where=f"forest50 {method}")


def wine(n: int) -> dict[str, np.ndarray]:
    with (FIXTURES / "inputs_wine.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        table = np.array([[float(v) for v in row] for row in itertools.islice(reader, n)])
    return {name: table[:, j].copy() for j, name in enumerate(header)}


@pytest.mark.parametrize("method", METHODS)
def test_gathered_and_built_forest_results_agree(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = forest(method)
    columns = wine(300)
    sums: list[bool] = []
    real = _kernels.sum_rows

    def counted(*args: Any) -> None:
        sums.append(True)
        real(*args)

    monkeypatch.setattr(_kernels, "sum_rows", counted)  # _mining reads it at each call
    gathered = model.predict({k: v[:299] for k, v in columns.items()})
    compiled_sums = len(sums)
    columns["citric acid"][299] = np.nan  # row 299 only; it sends the batch the other way
    built = model.predict(columns)
    assert len(sums) == compiled_sums  # the built run summed in numpy
    assert compiled_sums == (1 if "Average" in method or method == "average" else 0)
    assert gathered.probabilities is not None
    assert built.probabilities is not None
    assert gathered.probabilities.tobytes() == built.probabilities[:299].tobytes()
    assert gathered.label.tolist() == built.label[:299].tolist()
    assert len(set(gathered.label.tolist())) >= 3  # the rows are not all one class
