"""Typed columns of values: how PMML data types live in numpy arrays.

Every field value is held for a whole batch of rows in one :class:`Column`:

* ``double``, ``float``, ``integer`` and ``boolean`` values in a float64 array, NaN = missing.
  A ``float`` value is the float64 holding the exact float32 number (so float64 comparisons
  give float32 answers), an ``integer`` an integral float64, a ``boolean`` 1.0 or 0.0.
* ``string`` values in an object array of ``str``, ``None`` = missing.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

NUMERIC_TYPES = frozenset({"double", "float", "integer", "boolean"})
DATA_TYPES = NUMERIC_TYPES | {"string"}

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]
Scalar = float | str


class Column(NamedTuple):
    """The values of one field for every row of a batch, with their PMML data type."""

    values: npt.NDArray[np.float64] | npt.NDArray[np.object_]
    data_type: str

    @property
    def numeric(self) -> bool:
        return self.data_type in NUMERIC_TYPES

    def missing(self) -> BoolArray:
        """Rows whose value is missing."""
        if self.numeric:
            return np.isnan(self.values.astype(np.float64, copy=False))
        return np.array([value is None for value in self.values.tolist()], dtype=bool)

    def floats(self) -> FloatArray:
        """The values as float64 (only for numeric columns)."""
        return self.values.astype(np.float64, copy=False)


def round_float32(text_or_value: str | float) -> float:
    """Round a decimal string (or a float64) to the nearest float32, exactly like Java.

    Going through float64 first could round twice; here the decimal value is compared exactly
    with the float32 neighbours.
    """
    value = float(text_or_value)
    if not math.isfinite(value):
        return float(np.float32(value))
    exact = Fraction(text_or_value) if isinstance(text_or_value, str) else Fraction(value)
    candidate = np.float32(value)
    best = candidate
    for other in (
        np.nextafter(candidate, np.float32(-np.inf)),
        np.nextafter(candidate, np.float32(np.inf)),
    ):
        if not np.isfinite(other):
            continue
        gap_best = abs(Fraction(float(best)) - exact)
        gap_other = abs(Fraction(float(other)) - exact)
        even = int(other.view(np.uint32)) % 2 == 0
        if gap_other < gap_best or (gap_other == gap_best and even):
            best = other
    return float(best)


def parse_scalar(text: str, data_type: str) -> Scalar:
    """Parse one PMML attribute or cell value into its typed form; ValueError if it does not fit."""
    text = text.strip() if data_type != "string" else text
    if data_type == "string":
        return text
    if data_type == "boolean":
        lowered = text.lower()
        if lowered in ("true", "1"):
            return 1.0
        if lowered in ("false", "0"):
            return 0.0
        raise ValueError(f"not a boolean: {text!r}")
    if data_type == "integer":
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"not an integer: {text!r}")
        return number
    if data_type == "float":
        return round_float32(text)
    return float(text)


def java_double_str(value: float) -> str:
    """Format a double the way Java's ``Double.toString`` does for the common cases."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if 1e-3 <= abs(value) < 1e7:
        return repr(value)  # shortest round-trip digits, plain notation in this range
    _, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    power = len(digits) + int(exponent) - 1
    sign = "-" if value < 0 else ""
    return f"{sign}{text[0]}.{text[1:] or '0'}E{power}"


def format_scalar(value: float, data_type: str) -> str:
    """Turn a numeric value into the string JPMML would produce for its type."""
    if data_type == "integer":
        return str(int(value))
    if data_type == "boolean":
        return "true" if value else "false"
    return java_double_str(value)


def to_strings(column: Column) -> ObjectArray:
    """The column as an object array of strings (None = missing)."""
    if not column.numeric:
        return column.values.astype(object, copy=False)
    out = np.empty(len(column.values), dtype=object)
    for i, value in enumerate(column.floats()):
        out[i] = None if math.isnan(value) else format_scalar(float(value), column.data_type)
    return out


def cast_column(column: Column, data_type: str) -> Column:
    """Convert a column to another PMML data type; ValueError for a value that does not fit."""
    if column.data_type == data_type:
        return column
    if data_type == "string":
        return Column(to_strings(column), "string")
    if column.numeric:
        values = column.floats()
        if data_type == "float":
            values = values.astype(np.float32).astype(np.float64)
        elif data_type == "integer":
            finite = values[~np.isnan(values)]
            if not np.all(finite == np.trunc(finite)):
                raise ValueError("a non-integral number cannot become an integer")
        elif data_type == "boolean":
            values = np.where(np.isnan(values), np.nan, (values != 0).astype(np.float64))
        return Column(values, data_type)
    out = np.full(len(column.values), np.nan)
    for i, text in enumerate(column.values):
        if text is not None:
            out[i] = parse_scalar(str(text), data_type)
    return Column(out, data_type)


def constant_column(value: Scalar | None, data_type: str, n: int) -> Column:
    """A column holding the same value in every row (``None`` = missing)."""
    if data_type == "string":
        values = np.empty(n, dtype=object)
        values[:] = value
        return Column(values, "string")
    return Column(np.full(n, np.nan if value is None else float(value)), data_type)


def missing_column(data_type: str, n: int) -> Column:
    """A column of missing values."""
    return constant_column(None, data_type, n)


def where_column(mask: BoolArray, value: Column, other: Column) -> Column:
    """Row-wise choice between two columns of the same kind (mask true → ``value``)."""
    if value.numeric != other.numeric:
        other = cast_column(other, value.data_type)
    if value.numeric:
        return Column(np.where(mask, value.floats(), other.floats()), value.data_type)
    out = other.values.copy()
    out[mask] = value.values[mask]
    return Column(out, value.data_type)


def equals_scalar(column: Column, value: Scalar) -> BoolArray:
    """Rows equal to one typed value (missing rows are False)."""
    if column.numeric:
        return np.asarray(column.floats() == float(value))
    return np.array([item == value for item in column.values.tolist()], dtype=bool)
