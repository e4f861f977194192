"""The compiled loops of eventml/_kernels.c, against plain-Python references and bad calls.

The callers' own tests (test_formats_builtin.py: every fast path reads like the row loop;
test_pmml_*.py: trees score like JPMML) cover them through eventml; these pin the kernels'
contracts: exact bits, what makes a row not fit, and a ValueError instead of a read out of
bounds for every inconsistent call.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import numpy as np
import pytest

from eventml import _kernels

I64 = np.int64


def ints(*values: int) -> np.ndarray:
    return np.array(values, I64)


# ---- read_maps --------------------------------------------------------------------------------


def layout(row: dict[str, float]) -> tuple[bytes, bytes, np.ndarray]:
    """Signature, mask and value offsets of an all-float map, built independently of _rows.py:
    a value's eight bytes follow its encoded key and the float64 marker 0xcb."""
    raw = msgspec.msgpack.encode(row)
    offsets = []
    for key in row:
        head = msgspec.msgpack.encode(key) + b"\xcb"
        offsets.append(raw.index(head) + len(head))
    mask = bytearray(b"\xff" * len(raw))
    for at in offsets:
        mask[at : at + 8] = bytes(8)
    signature = bytes(b & m for b, m in zip(raw, mask, strict=True))
    return signature, bytes(mask), np.array(offsets, I64)


def test_read_maps_reads_every_value_bit_for_bit() -> None:
    rows = [
        {"a": 1.5, "bb": -0.0, "c": float("inf")},
        {"a": float("nan"), "bb": 2.0**-1074, "c": -1e308},
        {"a": 0.1, "bb": 3.0, "c": 1 / 3},
    ]
    signature, mask, offsets = layout(rows[0])
    raws: list[Any] = [msgspec.msgpack.encode(r) for r in rows]
    raws[1] = bytearray(raws[1])  # any bytes-like object
    raws[2] = msgspec.msgpack.decode(msgspec.msgpack.encode([rows[2]]), type=list[msgspec.Raw])[0]
    want = np.array([[r["c"], r["a"]] for r in rows])
    for dtype in (np.float64, np.float32):
        out = np.empty((3, 2), dtype)
        assert _kernels.read_maps(raws, signature, mask, offsets[[2, 0]], out) is True
        with np.errstate(over="ignore"):  # -1e308 is -inf in float32, as numpy casts it
            assert out.tobytes() == want.astype(dtype).tobytes()


@pytest.mark.parametrize(
    "other",
    [{"a": 1.0, "bb": 2.0, "cc": 3.0}, {"bb": 2.0, "a": 1.0, "c": 3.0}, {"a": 1.0, "bb": 2, "c": 3.0},
     {"a": 1.0, "bb": 2.0}, {"a": 1.0, "bb": 2.0, "c": 3.0, "d": 4.0}, {"a": 1.0, "bb": 2.0, "c": None}],
    ids=["other key", "other order", "an int", "fewer keys", "more keys", "a null"],
)  # fmt: skip
def test_read_maps_refuses_a_map_of_another_layout(other: dict[str, Any]) -> None:
    signature, mask, offsets = layout({"a": 1.0, "bb": 2.0, "c": 3.0})
    raws = [msgspec.msgpack.encode({"a": 5.0, "bb": 6.0, "c": 7.0}), msgspec.msgpack.encode(other)]
    out = np.empty((2, 3))
    assert _kernels.read_maps(raws, signature, mask, offsets, out) is False
    assert _kernels.read_maps(raws[:1], signature, mask, offsets, out[:1]) is True
    assert out[0].tolist() == [5.0, 6.0, 7.0]


def test_read_maps_refuses_inconsistent_calls() -> None:
    signature, mask, offsets = layout({"a": 1.0})
    raw = [msgspec.msgpack.encode({"a": 1.0})]
    with pytest.raises(ValueError, match=r"^expected offsets within a map of 12 bytes, got 5$"):
        _kernels.read_maps(raw, signature, mask, ints(5), np.empty((1, 1)))
    with pytest.raises(ValueError, match=r"^expected a mask of 12 bytes, got 11$"):
        _kernels.read_maps(raw, signature, mask[:-1], offsets, np.empty((1, 1)))
    with pytest.raises(
        ValueError, match=r"^expected out as 1 float64 or float32 items, got 16 bytes of format"
    ):
        _kernels.read_maps(raw, signature, mask, offsets, np.empty((2, 1)))
    with pytest.raises(ValueError, match=r"^expected out as 1 float64 or float32 items"):
        _kernels.read_maps(raw, signature, mask, offsets, np.empty((1, 1), I64))


# ---- read_dicts -------------------------------------------------------------------------------


def test_read_dicts_fills_the_columns_keys_name() -> None:
    rows = [{"x": 1.0, "y": -0.0, "z": float("nan")}, {"x": 2.5, "y": 1e-320, "z": 3.0}]
    out = np.full((2, 2), 9.0)
    assert _kernels.read_dicts(rows, ("x", "y", "z"), ints(-1, 1, 0), 2, out) is True
    want = np.array([[r["z"], r["y"]] for r in rows])
    assert out.tobytes() == want.tobytes()
    single = np.empty((2, 2), np.float32)
    assert _kernels.read_dicts(rows, ("x", "y", "z"), ints(-1, 1, 0), 2, single) is True
    assert single.tobytes() == want.astype(np.float32).tobytes()


class Sub(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    "other",
    [{"x": 1.0, "z": 2.0}, {"y": 1.0, "x": 2.0}, {"x": 1.0, "y": 2}, {"x": 1.0, "y": True},
     {"x": 1.0}, {"x": 1.0, "y": 2.0, "z": 3.0}, Sub(x=1.0, y=2.0), {"x": 1.0, 2: 2.0}],
    ids=["other key", "other order", "an int", "a bool", "fewer", "more", "a subclass", "an int key"],
)  # fmt: skip
def test_read_dicts_refuses_a_row_of_another_layout(other: dict[Any, Any]) -> None:
    rows = [{"x": 5.0, "y": 6.0}, other]
    out = np.empty((2, 2))
    assert _kernels.read_dicts(rows, ("x", "y"), ints(0, 1), 2, out) is False
    assert _kernels.read_dicts([{"x": 5.0, "y": 6.0}], ("x", "y"), ints(0, 1), 2, out[:1])


def test_read_dicts_compares_keys_by_value_not_identity() -> None:
    key = "".join(["fea", "ture"])  # an equal str that is another object
    assert key == "feature"
    assert key is not "feature"  # noqa: F632 - the point of the test
    out = np.empty((1, 1))
    assert _kernels.read_dicts([{key: 4.0}], ("feature",), ints(0), 1, out) is True
    assert out.tolist() == [[4.0]]


def test_read_dicts_refuses_inconsistent_calls() -> None:
    rows = [{"a": 1.0}]
    with pytest.raises(ValueError, match=r"^expected columns below 1, got 3$"):
        _kernels.read_dicts(rows, ("a",), ints(3), 1, np.empty((1, 1)))
    with pytest.raises(ValueError, match=r"^expected keys as a tuple of str$"):
        _kernels.read_dicts(rows, (1,), ints(0), 1, np.empty((1, 1)))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^expected columns as 1 int64 items, got 16 bytes of format"
    ):
        _kernels.read_dicts(rows, ("a",), ints(0, 0), 1, np.empty((1, 1)))
    with pytest.raises(ValueError, match=r"^expected out as 1 float64 or float32 items"):
        _kernels.read_dicts(rows, ("a",), ints(0), 1, np.empty((2, 1)))


# ---- walk_trees -------------------------------------------------------------------------------

OPS = (0b001, 0b011, 0b010, 0b110, 0b100, 0b101)  # <, <=, ==, >=, >, !=


def random_forest(rng: np.random.Generator, trees: int, width: int) -> dict[str, Any]:
    """Random binary trees in the kernel's tables; thresholds drawn from the inputs' values."""
    left: list[int] = []
    right: list[int] = []
    column: list[int] = []
    threshold: list[float] = []
    op: list[int] = []
    roots = []

    def grow(depth: int) -> int:
        i = len(left)
        left.append(i)
        right.append(i)
        column.append(int(rng.integers(width)))
        threshold.append(float(rng.integers(-2, 3)))
        op.append(int(rng.choice(OPS)))
        if depth > 0 and rng.random() < 0.8:
            a = grow(depth - 1)
            b = grow(depth - 1)
            left[i], right[i] = a, b
        return i

    for _ in range(trees):
        roots.append(grow(5))
    return {
        "roots": np.array(roots, I64), "left": np.array(left, I64),
        "right": np.array(right, I64), "column": np.array(column, I64),
        "threshold": np.array(threshold), "op": np.array(op, I64),
    }  # fmt: skip


def reference_walk(t: dict[str, Any], matrix: np.ndarray) -> np.ndarray:
    out = np.empty((len(t["roots"]), len(matrix)), I64)
    for k, root in enumerate(t["roots"]):
        for r, x in enumerate(matrix.tolist()):
            node = int(root)
            while t["left"][node] != node:
                v, th = x[t["column"][node]], t["threshold"][node]
                outcome = 0 if v < th else 1 if v == th else 2
                node = t["left"][node] if (t["op"][node] >> outcome) & 1 else t["right"][node]
            out[k, r] = node
    return out


def test_walk_trees_matches_a_plain_walk_with_values_on_every_threshold() -> None:
    rng = np.random.default_rng(3)
    tables = random_forest(rng, trees=7, width=3)
    matrix = rng.integers(-3, 4, size=(203, 3)).astype(np.float64)  # many x == t exactly
    matrix[0, 0], matrix[1, 1] = -0.0, np.nextafter(1.0, 2.0)
    want = reference_walk(tables, matrix)
    out = np.empty((7, 203), I64)
    _kernels.walk_trees(
        tables["roots"], tables["left"], tables["right"], tables["column"], tables["threshold"],
        tables["op"], 6, matrix, 3, out,
    )  # fmt: skip
    assert out.tolist() == want.tolist()
    assert len(set(out.ravel().tolist())) > 20  # the walk went many ways


def test_walk_trees_refuses_inconsistent_tables() -> None:
    m = np.zeros((3, 2))

    def call(**change: Any) -> np.ndarray:
        args: dict[str, Any] = {
            "roots": ints(0), "left": ints(1, 1, 2), "right": ints(2, 1, 2),
            "column": ints(1, 0, 0), "threshold": np.zeros(3), "op": ints(0b011, 0, 0),
            "depth": 1, "matrix": m, "width": 2, "out": np.empty((1, 3), I64),
        } | change  # fmt: skip
        _kernels.walk_trees(*args.values())
        return np.asarray(args["out"])

    assert call().tolist() == [[1, 1, 1]]  # x == 0 <= 0: left
    assert call(op=ints(0b001, 0, 0)).tolist() == [[2, 2, 2]]  # not x < 0: right
    with pytest.raises(ValueError, match=r"^node 1 links or reads outside the tables$"):
        call(column=ints(0, 2, 0))
    with pytest.raises(ValueError, match=r"^node 0 links or reads outside the tables$"):
        call(left=ints(3, 1, 2))
    with pytest.raises(ValueError, match=r"^root 0 is not a node$"):
        call(roots=ints(-1))
    with pytest.raises(
        ValueError, match=r"^expected threshold as 3 float64 items, got 16 bytes of format 'd'$"
    ):
        call(threshold=np.zeros(2))
    with pytest.raises(ValueError, match=r"^expected out as 3 int64 items, got 16 bytes of format"):
        call(out=np.empty((1, 2), I64))
    with pytest.raises(ValueError, match=r"^expected a matrix of rows of 4 values"):
        call(width=4)


# ---- sum_rows ---------------------------------------------------------------------------------


def test_sum_rows_is_numpys_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    table = rng.random((40, 3))
    index = rng.integers(0, 40, size=(9, 500))
    weights = rng.random(9)
    out = np.empty((500, 3))
    _kernels.sum_rows(table, 3, index, None, out)
    assert out.tobytes() == table[index].sum(axis=0).tobytes()
    _kernels.sum_rows(table, 3, index, weights, out)
    assert out.tobytes() == (weights[:, None, None] * table[index]).sum(axis=0).tobytes()


@pytest.mark.parametrize(("rows", "width"), [(1, 2), (2, 1), (3, 6)])
def test_sum_rows_matches_numpy_over_many_segments(rows: int, width: int) -> None:
    # numpy adds in segment order unless rows * width == 1 (pairwise: the caller uses numpy)
    rng = np.random.default_rng(rows * 10 + width)
    table = rng.random((30, width))
    index = rng.integers(0, 30, size=(200, rows))
    weights = rng.random(200)
    out = np.empty((rows, width))
    _kernels.sum_rows(table, width, index, weights, out)
    assert out.tobytes() == (weights[:, None, None] * table[index]).sum(axis=0).tobytes()


def test_sum_rows_refuses_inconsistent_calls() -> None:
    table = np.arange(6.0).reshape(3, 2)
    with pytest.raises(ValueError, match=r"^index 3 \(item 1\) is not a row of the table$"):
        _kernels.sum_rows(table, 2, ints(0, 3), None, np.empty((2, 2)))
    with pytest.raises(ValueError, match=r"^expected out as rows of 2 values and index as"):
        _kernels.sum_rows(table, 2, ints(0, 1, 2), None, np.empty((2, 2)))
    with pytest.raises(
        ValueError, match=r"^expected weights as 2 float64 items, got 24 bytes of format 'd'$"
    ):
        _kernels.sum_rows(table, 2, ints(0, 1, 2, 0), np.ones(3), np.empty((2, 2)))


# ---- calls that would read or write out of bounds without the checks ---------------------------


def test_sizes_that_overflow_are_refused() -> None:
    too_wide = "expected sizes that fit in memory for out, got 2305843009213693953 x 8"
    with pytest.raises(ValueError, match=f"^{too_wide}$"):
        _kernels.read_dicts([{"a": 1.0}], ("a",), ints(2**40), 2**61 + 1, np.zeros(1))
    with pytest.raises(ValueError, match=r"^expected offsets within a map of 8 bytes, got"):
        _kernels.read_maps([bytes(8)], bytes(8), bytes(8), ints(2**63 - 4), np.zeros(1))


def test_an_output_over_the_indexes_cannot_change_them_after_their_check() -> None:
    shared = np.zeros(2, I64)
    raw = struct.pack(">q", 1 << 40)  # row 0's value lands on offsets[0]: 1 << 40 as int64
    assert _kernels.read_maps([raw, raw], bytes(8), bytes(8), shared[:1], shared.view(np.float64))
    assert shared.tolist() == [1 << 40, 1 << 40]  # row 1 was read at the checked offset 0
    columns = np.zeros(2, I64)
    columns[1] = -1
    out = columns.view(np.float64)[:1].reshape(1, 1)  # out[0, 0] is columns[0]
    assert _kernels.read_dicts([{"a": 5e-324, "b": 1.0}], ("a", "b"), columns, 1, out)
    assert out.tolist() == [[5e-324]]
    index = np.zeros(2, I64)
    _kernels.sum_rows(np.array([1e300]), 1, index[:1], None, index[1:].view(np.float64))
    assert index[1:].view(np.float64).tolist() == [1e300]


def test_buffers_of_another_format_or_alignment_are_refused() -> None:
    signature, mask, offsets = layout({"a": 1.0})
    raw = [msgspec.msgpack.encode({"a": 1.0})]
    with pytest.raises(ValueError, match=r"^expected offsets as int64 items, got format 'd'$"):
        _kernels.read_maps(raw, signature, mask, offsets.astype(np.float64), np.empty((1, 1)))
    unaligned = np.frombuffer(bytes(17), np.float64, 2, 1)
    with pytest.raises(ValueError, match=r"^expected table aligned to its 8-byte items$"):
        _kernels.sum_rows(unaligned, 1, ints(0), None, np.empty(1))
    with pytest.raises(
        ValueError,
        match=r"^expected out as 1 float64 or float32 items, got 8 bytes of format '>d'$",
    ):
        _kernels.read_maps(raw, signature, mask, offsets, np.empty((1, 1), np.dtype(">f8")))


def test_sum_rows_starts_from_zero_like_numpy() -> None:
    table = np.array([[-0.0, 1.0], [-0.0, 2.0]])
    index = ints(0, 1, 1, 0).reshape(2, 2)
    out = np.full((2, 2), 7.0)
    _kernels.sum_rows(table, 2, index, None, out)
    assert out.tobytes() == table[index].sum(axis=0).tobytes()  # 0.0, not -0.0
    assert str(out[0, 0]) == "0.0"
    empty = np.full((2, 2), 7.0)
    _kernels.sum_rows(table, 2, np.empty((0, 2), I64), None, empty)
    assert empty.tolist() == [[0.0, 0.0], [0.0, 0.0]]
