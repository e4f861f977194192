# Types of the compiled module built from _kernels.c (docstrings there).
from typing import Any

def read_maps(raws: list[Any], signature: bytes, mask: bytes, offsets: Any, out: Any) -> bool: ...
def read_dicts(
    rows: list[Any], keys: tuple[str, ...], columns: Any, width: int, out: Any
) -> bool: ...
def walk_trees(
    roots: Any,
    left: Any,
    right: Any,
    column: Any,
    threshold: Any,
    op: Any,
    depth: int,
    matrix: Any,
    width: int,
    out: Any,
) -> None: ...
def sum_rows(table: Any, width: int, index: Any, weights: Any | None, out: Any) -> None: ...
