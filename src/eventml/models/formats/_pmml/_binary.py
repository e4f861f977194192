"""The fast tree walk: every input present, one comparison per tree level.

With no missing input no predicate is unknown, so "first true child wins" over children
``p1, p2, ..., True`` is the binary chain ``p1 ? c1 : (p2 ? c2 : ... : cn)``. :func:`binary_tables`
rewrites each inner node as such a chain when every child but the last is a numeric comparison
and the last is ``True`` or the complement of the one before it (same field and threshold,
``x <= t`` / ``x > t``).

A leaf links to itself on both sides, so every (tree, row) pair takes exactly ``depth`` steps
and one reaching its leaf early stays there. :func:`walk` runs the steps in compiled code
(``eventml/_kernels.c``, ``walk_trees``): row by row, a few rows at once, with no branch on the
comparison. The numpy walk it replaced moved all pairs one level per call and measured 3× slower
on the 50-tree forest of ``bench.pmml`` (it wrote and read seven arrays of every pair per level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from eventml import _kernels

from ._values import FloatArray

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BinaryTables:
    """Binary chains over the original nodes (extra links appended after them)."""

    left: IntArray
    right: IntArray
    column: IntArray
    threshold: FloatArray
    op: IntArray  # 3-bit outcome masks: bit 0 x < t, bit 1 x == t, bit 2 x > t
    depth: int


def binary_tables(
    children: list[list[int]],
    kinds: tuple[list[int], int, int],
    column: list[int],
    threshold: list[float],
    op: list[int],
    roots: list[int],
) -> BinaryTables | None:
    """Build the chains, or None if some node does not fit (see the module docstring)."""
    kind, compare, true = kinds
    count = len(kind)
    if any(kind[root] != true for root in roots):
        return None
    left, right = list(range(count)), list(range(count))  # leaves loop onto themselves
    col, thr, ops = [0] * count, [0.0] * count, [0] * count
    for i, kids in enumerate(children):
        if not kids:
            continue
        if len(kids) < 2 or any(kind[k] != compare for k in kids[:-1]):
            return None
        last, before = kids[-1], kids[-2]
        if kind[last] != true and not (
            kind[last] == compare
            and column[last] == column[before]
            and threshold[last] == threshold[before]
            and op[last] ^ op[before] == 0b111
        ):
            return None
        link = i
        for j, kid in enumerate(kids[:-1]):
            following = last
            if j < len(kids) - 2:
                following = len(left)
                left.append(following)
                right.append(following)
                col.append(0)
                thr.append(0.0)
                ops.append(0)
            left[link], right[link] = kid, following
            col[link], thr[link], ops[link] = column[kid], threshold[kid], op[kid]
            link = following
    return BinaryTables(
        np.array(left, dtype=np.int64),
        np.array(right, dtype=np.int64),
        np.array(col, dtype=np.int64),
        np.array(thr),
        np.array(ops, dtype=np.int64),
        _depth(left, right, roots),
    )


def _depth(left: list[int], right: list[int], roots: list[int]) -> int:
    deepest, stack = 0, [(root, 0) for root in roots]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if left[node] != node:
            stack.extend(((left[node], level + 1), (right[node], level + 1)))
    return deepest


def walk(tables: BinaryTables, roots: IntArray, matrix: FloatArray) -> IntArray:
    """Leaf of every (tree, row), shape [trees, rows]; ``matrix`` is [rows, fields], all finite."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    out = np.empty((len(roots), len(matrix)), dtype=np.int64)
    _kernels.walk_trees(
        np.ascontiguousarray(roots, dtype=np.int64), tables.left, tables.right, tables.column,
        tables.threshold, tables.op, tables.depth, matrix, max(matrix.shape[1], 1), out,
    )  # fmt: skip
    return out
