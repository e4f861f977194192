"""Built-in PMML functions for Apply, column-wise, with JPMML's missing-value rules.

JPMML lets only its "missing value tolerant" functions see a missing argument: arithmetic
(``+ - * /``, missing in, missing out), aggregates (``min max sum avg product``, which skip
missing values), ``isMissing``/``isNotMissing`` and ``isIn``/``isNotIn``. Any other function
given a missing argument makes JPMML refuse the record, and :class:`~._expressions.Apply` refuses
it too. Arithmetic on integers stays integer arithmetic (Java ``int``: ``7 / 10 == 0``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ._values import BoolArray, Column, FloatArray, cast_column

Function = Callable[[list[Column], int], Column]


def _num(fn: Callable[..., FloatArray], data_type: str = "double") -> Function:
    def call(args: list[Column], n: int) -> Column:
        with np.errstate(all="ignore"):
            return Column(np.asarray(fn(*(a.floats() for a in args)), dtype=np.float64), data_type)

    return call


def _bool(fn: Callable[..., BoolArray]) -> Function:
    def call(args: list[Column], n: int) -> Column:
        missing = np.logical_or.reduce([a.missing() for a in args])
        if all(a.numeric for a in args):
            values: list[np.ndarray] = [a.floats() for a in args]
        elif all(not a.numeric for a in args):
            values = [np.where(a.missing(), "", a.values) for a in args]
        else:
            values = [cast_column(a, "string").values for a in args]
        with np.errstate(invalid="ignore"):
            result = np.asarray(fn(*values), dtype=bool)
        return Column(np.where(missing, np.nan, result.astype(np.float64)), "boolean")

    return call


def _reduce(fn: Callable[[FloatArray], FloatArray]) -> Function:
    def call(args: list[Column], n: int) -> Column:
        stacked = np.stack([a.floats() for a in args])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing rows give NaN
            return Column(np.asarray(fn(stacked), dtype=np.float64), "double")

    return call


def _java_round(x: FloatArray) -> FloatArray:
    """Java ``Math.round``: halves round up (towards positive infinity)."""
    return np.floor(x + 0.5)


def _string(fn: Callable[[str], str]) -> Function:
    def call(args: list[Column], n: int) -> Column:
        values = cast_column(args[0], "string").values
        return Column(
            np.array([None if v is None else fn(v) for v in values], dtype=object), "string"
        )

    return call


FUNCTIONS: dict[str, tuple[int, int, Function]] = {  # name: (min args, max args, implementation)
    "+": (2, 2, _num(np.add)),
    "-": (2, 2, _num(np.subtract)),
    "*": (2, 2, _num(np.multiply)),
    "/": (2, 2, _num(np.divide)),
    "pow": (2, 2, _num(np.power)),
    "exp": (1, 1, _num(np.exp)),
    "ln": (1, 1, _num(np.log)),
    "log10": (1, 1, _num(np.log10)),
    "sqrt": (1, 1, _num(np.sqrt)),
    "abs": (1, 1, _num(np.abs)),
    "floor": (1, 1, _num(np.floor, "integer")),
    "ceil": (1, 1, _num(np.ceil, "integer")),
    "round": (1, 1, _num(_java_round, "integer")),
    "threshold": (2, 2, _num(lambda x, t: (x > t).astype(np.float64), "integer")),
    "min": (1, 99, _reduce(lambda s: np.nanmin(s, axis=0))),
    "max": (1, 99, _reduce(lambda s: np.nanmax(s, axis=0))),
    "sum": (
        1,
        99,
        _reduce(lambda s: np.where(np.isnan(s).all(axis=0), np.nan, np.nansum(s, axis=0))),
    ),
    "avg": (1, 99, _reduce(lambda s: np.nanmean(s, axis=0))),
    "product": (
        1,
        99,
        _reduce(lambda s: np.where(np.isnan(s).all(axis=0), np.nan, np.nanprod(s, axis=0))),
    ),
    "equal": (2, 2, _bool(np.equal)),
    "notEqual": (2, 2, _bool(np.not_equal)),
    "lessThan": (2, 2, _bool(np.less)),
    "lessOrEqual": (2, 2, _bool(np.less_equal)),
    "greaterThan": (2, 2, _bool(np.greater)),
    "greaterOrEqual": (2, 2, _bool(np.greater_equal)),
    "and": (2, 99, _bool(lambda *xs: np.logical_and.reduce([x != 0 for x in xs]))),
    "or": (2, 99, _bool(lambda *xs: np.logical_or.reduce([x != 0 for x in xs]))),
    "not": (1, 1, _bool(lambda x: x == 0)),
    "uppercase": (1, 1, _string(str.upper)),
    "lowercase": (1, 1, _string(str.lower)),
    "trimBlanks": (1, 1, _string(str.strip)),
}
SPECIAL = frozenset({"if", "isMissing", "isNotMissing", "isIn", "isNotIn"})
# JPMML's MissingValueTolerant functions; any other function given a missing argument makes
# JPMML refuse the whole record (MissingArgumentException), so we refuse it too.
TOLERANT = frozenset({"+", "-", "*", "/", "min", "max", "sum", "avg", "product", "isMissing",
                      "isNotMissing", "isIn", "isNotIn"})  # fmt: skip
AGGREGATES = frozenset({"min", "max", "sum", "avg", "product"})
BOOLEAN_RESULTS = frozenset(
    {"equal", "notEqual", "lessThan", "lessOrEqual", "greaterThan", "greaterOrEqual", "and", "or",
     "not"}
)  # fmt: skip
