"""DataDictionary, MiningSchema and the evaluation environment.

:func:`prepare_inputs` applies a model's MiningSchema to the caller's columns the way
JPMML-Evaluator's ``InputField.prepare`` does: missing values (``None``/NaN or a DataField
``Value property="missing"``) get ``missingValueReplacement``; values outside the DataField's
valid Values/Intervals are invalid and get ``invalidValueTreatment`` (``returnInvalid`` by
default, which raises :class:`SchemaMismatch`); valid continuous values get the ``outliers``
treatment.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from eventml.errors import ModelRejected, SchemaMismatch, expected_got

from ._values import (
    DATA_TYPES,
    BoolArray,
    Column,
    Scalar,
    constant_column,
    parse_scalar,
    where_column,
)
from ._xml import Element, missing_attribute, unsupported

OPTYPES = frozenset({"continuous", "categorical", "ordinal"})
CLOSURES = frozenset({"openClosed", "openOpen", "closedOpen", "closedClosed"})


def parse_value(element: Element, text: str, data_type: str, *, where: str) -> Scalar:
    """Parse an attribute value for a field of ``data_type``; a bad one rejects the model."""
    try:
        return parse_scalar(text, data_type)
    except ValueError:
        raise ModelRejected(
            f"PMML element {element.tag} (line {element.line}): "
            + expected_got(f"a {data_type} value", text),
            where=where,
        ) from None


def check_data_type(element: Element, *, where: str, default: str | None = None) -> str:
    data_type = element.get("dataType", default)
    if data_type is None:
        raise missing_attribute(element, "dataType", where=where)
    if data_type not in DATA_TYPES:
        raise unsupported(element, where=where, detail=f'dataType="{data_type}"')
    return data_type


@dataclass(frozen=True)
class Interval:
    """A continuous range with its closure (``closedClosed`` etc.)."""

    low: float
    high: float
    closure: str

    def contains(self, x: np.ndarray) -> BoolArray:
        low_ok = x >= self.low if self.closure.startswith("closed") else x > self.low
        high_ok = x <= self.high if self.closure.endswith("Closed") else x < self.high
        return np.asarray(low_ok & high_ok)


def parse_interval(element: Element, *, where: str) -> Interval:
    closure = element.get("closure")
    if closure not in CLOSURES:
        raise unsupported(element, where=where, detail=f'closure="{closure}"')
    try:
        low = float(element.get("leftMargin", "-inf") or "-inf")
        high = float(element.get("rightMargin", "inf") or "inf")
    except ValueError:
        raise ModelRejected(
            f"PMML element Interval (line {element.line}) has a margin that is not a number",
            where=where,
        ) from None
    return Interval(low, high, closure)


@dataclass(frozen=True)
class DataField:
    """One DataDictionary entry."""

    name: str
    optype: str
    data_type: str
    labels: tuple[str, ...] = ()  # valid Values as written, in document order
    valid: tuple[Scalar, ...] = ()
    invalid: tuple[Scalar, ...] = ()
    missing: tuple[Scalar, ...] = ()
    intervals: tuple[Interval, ...] = ()


def parse_data_dictionary(element: Element, *, where: str) -> dict[str, DataField]:
    fields: dict[str, DataField] = {}
    for child in element.elements():
        if child.tag == "Taxonomy":
            raise unsupported(child, where=where)
        if child.tag != "DataField":
            continue
        name = child.get("name")
        if name is None:
            raise missing_attribute(child, "name", where=where)
        optype = child.get("optype", "")
        if optype not in OPTYPES:
            raise unsupported(child, where=where, detail=f'optype="{optype}"')
        data_type = check_data_type(child, where=where)
        labels: list[str] = []
        groups: dict[str, list[Scalar]] = {"valid": [], "invalid": [], "missing": []}
        intervals = []
        for sub in child.elements():
            if sub.tag == "Value":
                text = sub.get("value")
                prop = sub.get("property", "valid") or "valid"
                if text is None:
                    raise missing_attribute(sub, "value", where=where)
                if prop not in groups:
                    raise unsupported(sub, where=where, detail=f'property="{prop}"')
                if prop == "missing":
                    groups[prop].append(text)  # compared against the raw input
                    continue
                groups[prop].append(parse_value(sub, text, data_type, where=where))
                if prop == "valid":
                    labels.append(text)
            elif sub.tag == "Interval":
                intervals.append(parse_interval(sub, where=where))
        fields[name] = DataField(
            name,
            optype,
            data_type,
            tuple(labels),
            tuple(groups["valid"]),
            tuple(groups["invalid"]),
            tuple(groups["missing"]),
            tuple(intervals),
        )
    return fields


MISSING_TREATMENTS = frozenset({"asIs", "asMean", "asMode", "asMedian", "asValue", "returnInvalid"})
INVALID_TREATMENTS = frozenset({"returnInvalid", "asIs", "asMissing", "asValue"})
OUTLIER_TREATMENTS = frozenset({"asIs", "asMissingValues", "asExtremeValues"})


@dataclass(frozen=True)
class MiningField:
    """One MiningSchema entry, its treatments parsed."""

    name: str
    usage: str
    missing_replacement: Scalar | None = None
    missing_treatment: str = "asIs"
    invalid_treatment: str = "returnInvalid"
    invalid_replacement: Scalar | None = None
    outliers: str = "asIs"
    low: float = -math.inf
    high: float = math.inf

    @property
    def plain(self) -> bool:
        """No treatment at all (what nested models are allowed to declare)."""
        return (
            self.missing_replacement is None
            and self.missing_treatment in ("asIs", "asMean", "asMode", "asMedian")
            and self.outliers == "asIs"
        )


USAGES = frozenset({"active", "target", "predicted", "supplementary", "group", "order"})


def parse_mining_schema(
    element: Element, types: Callable[[str, Element], str], *, where: str
) -> list[MiningField]:
    """Parse a MiningSchema; ``types(name, element)`` gives a field's data type or rejects."""
    out = []
    for child in element.findall("MiningField"):
        name = child.get("name")
        if name is None:
            raise missing_attribute(child, "name", where=where)
        usage = child.get("usageType", "active") or "active"
        if usage not in USAGES:
            raise unsupported(child, where=where, detail=f'usageType="{usage}"')
        data_type = types(name, child)
        missing_t = child.get("missingValueTreatment", "asIs") or "asIs"
        invalid_t = child.get("invalidValueTreatment", "returnInvalid") or "returnInvalid"
        outliers = child.get("outliers", "asIs") or "asIs"
        for value, allowed, attr in (
            (missing_t, MISSING_TREATMENTS, "missingValueTreatment"),
            (invalid_t, INVALID_TREATMENTS, "invalidValueTreatment"),
            (outliers, OUTLIER_TREATMENTS, "outliers"),
        ):
            if value not in allowed:
                raise unsupported(child, where=where, detail=f'{attr}="{value}"')
        replacement = child.get("missingValueReplacement")
        invalid_replacement = child.get("invalidValueReplacement")
        if invalid_t == "asValue" and invalid_replacement is None:
            raise missing_attribute(child, "invalidValueReplacement", where=where)
        try:
            low = float(child.get("lowValue", "-inf") or "-inf")
            high = float(child.get("highValue", "inf") or "inf")
        except ValueError:
            raise ModelRejected(
                f"MiningField {name} (line {child.line}) has a lowValue/highValue that is not "
                "a number",
                where=where,
            ) from None
        out.append(
            MiningField(
                name,
                usage,
                None
                if replacement is None
                else parse_value(child, replacement, data_type, where=where),
                missing_t,
                invalid_t,
                None
                if invalid_replacement is None
                else parse_value(child, invalid_replacement, data_type, where=where),
                outliers,
                low,
                high,
            )
        )
    return out


def _raw_column(name: str, raw: np.ndarray, data: DataField, n: int, where: str) -> Column:
    """Convert the caller's array to a typed column (missing markers → missing)."""
    if data.data_type == "string":
        if raw.dtype.kind in "US":
            values = raw.astype(object)
        elif raw.dtype == object:
            values = raw.copy()
            for i, item in enumerate(values):
                if item is None or (isinstance(item, float) and math.isnan(item)):
                    values[i] = None
                elif not isinstance(item, str):
                    raise SchemaMismatch(
                        expected_got(f"a string for field '{name}'", item, f"row {i}"),
                        where=where,
                        row=i,
                    )
        else:
            raise SchemaMismatch(
                expected_got(
                    f"an object array of strings for field '{name}'", f"{raw.dtype} array"
                ),
                where=where,
            )
        for i, item in enumerate(values):
            if item is not None and item in data.missing:
                values[i] = None
        return Column(values, "string")
    if raw.dtype.kind in "fiub":
        values_f = raw.astype(np.float64)
    elif raw.dtype.kind in "OUS":
        values_f = np.full(n, np.nan)
        for i, item in enumerate(raw):
            if item is None:
                continue
            if isinstance(item, str) and item in data.missing:
                continue
            try:
                values_f[i] = float(item)
            except (TypeError, ValueError):
                raise SchemaMismatch(
                    expected_got(f"a number for field '{name}'", item, f"row {i}"),
                    where=where,
                    row=i,
                ) from None
    else:
        raise SchemaMismatch(
            expected_got(f"a numeric array for field '{name}'", f"{raw.dtype} array"), where=where
        )
    for marker in data.missing:
        with contextlib.suppress(ValueError):
            values_f[values_f == float(marker)] = np.nan
    if np.isinf(values_f).any():
        row = int(np.flatnonzero(np.isinf(values_f))[0])
        raise SchemaMismatch(
            expected_got(f"a finite number for field '{name}'", float(values_f[row]), f"row {row}"),
            where=where,
            row=row,
        )
    if data.data_type == "float":
        values_f = values_f.astype(np.float32).astype(np.float64)
    elif data.data_type == "integer":
        bad = ~np.isnan(values_f) & (values_f != np.trunc(values_f))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise SchemaMismatch(
                expected_got(f"an integer for field '{name}'", float(values_f[row]), f"row {row}"),
                where=where,
                row=row,
            )
    elif data.data_type == "boolean":
        known = ~np.isnan(values_f)
        values_f[known] = (values_f[known] != 0).astype(np.float64)
    return Column(values_f, data.data_type)


def _valid_mask(column: Column, data: DataField) -> BoolArray:
    """Rows whose (non-missing) value is valid for the DataField."""
    n = len(column.values)
    present = ~column.missing()
    if column.numeric:
        x = column.floats()
        listed = np.zeros(n, dtype=bool)
        for value in data.valid:
            listed |= x == float(value)
        if data.optype == "continuous":
            if data.intervals:
                inside = np.zeros(n, dtype=bool)
                for interval in data.intervals:
                    inside |= interval.contains(x)
                ok = inside | listed
            elif data.valid:
                ok = listed
            else:
                ok = np.ones(n, dtype=bool)
        else:
            ok = listed if data.valid else np.ones(n, dtype=bool)
        for value in data.invalid:
            ok &= x != float(value)
    else:
        ok = (
            np.isin(column.values, np.array(data.valid, dtype=object))
            if data.valid
            else np.ones(n, dtype=bool)
        )
        if data.invalid:
            ok &= ~np.isin(column.values, np.array(data.invalid, dtype=object))
    return np.asarray(ok & present)


def prepare_inputs(
    columns: Mapping[str, np.ndarray],
    data_fields: Mapping[str, DataField],
    mining: list[MiningField],
    *,
    where: str,
) -> tuple[int, dict[str, Column]]:
    """Validate and treat the caller's columns for the active MiningFields."""
    active = [m for m in mining if m.usage == "active"]
    n: int | None = None
    out: dict[str, Column] = {}
    for spec in active:
        if spec.name not in columns:
            raise SchemaMismatch(
                expected_got(f"a column for PMML field '{spec.name}'", sorted(columns)), where=where
            )
        raw = np.asarray(columns[spec.name])
        if raw.ndim != 1:
            raise SchemaMismatch(
                expected_got(f"a 1-d array for field '{spec.name}'", f"shape {raw.shape}"),
                where=where,
            )
        if n is None:
            n = len(raw)
        elif len(raw) != n:
            raise SchemaMismatch(
                expected_got(f"{n} rows for field '{spec.name}'", f"{len(raw)} rows"), where=where
            )
        data = data_fields[spec.name]
        column = _raw_column(spec.name, raw, data, len(raw), where)
        out[spec.name] = treat(column, data, spec, where=where)
    if n is None:
        n = len(next(iter(columns.values()))) if columns else 0
    return n, out


def treat(column: Column, data: DataField, spec: MiningField, *, where: str) -> Column:
    """Apply the MiningField's invalid, outlier and missing value treatments."""
    n = len(column.values)
    missing = column.missing()
    valid = _valid_mask(column, data)
    invalid = ~missing & ~valid
    if invalid.any():
        if spec.invalid_treatment == "returnInvalid":
            row = int(np.flatnonzero(invalid)[0])
            raise SchemaMismatch(
                expected_got(
                    f"a valid value for field '{data.name}'",
                    column.values[row] if not column.numeric else float(column.values[row]),
                    f"row {row}",
                ),
                where=where,
                row=row,
            )
        if spec.invalid_treatment == "asMissing":
            column = where_column(invalid, constant_column(None, column.data_type, n), column)
            missing = missing | invalid
        elif spec.invalid_treatment == "asValue":
            replacement = constant_column(spec.invalid_replacement, column.data_type, n)
            column = where_column(invalid, replacement, column)
    if column.numeric and spec.outliers != "asIs" and data.optype == "continuous":
        x = column.floats()
        low, high = valid & (x < spec.low), valid & (x > spec.high)
        if spec.outliers == "asMissingValues":
            x = np.where(low | high, np.nan, x)
            missing = missing | low | high
        else:
            x = np.where(low, spec.low, np.where(high, spec.high, x))
        column = Column(x, column.data_type)
    if spec.missing_treatment == "returnInvalid" and missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise SchemaMismatch(
            expected_got(f"a value for field '{data.name}'", None, f"row {row}"),
            where=where,
            row=row,
        )
    if spec.missing_replacement is not None and missing.any():
        replacement = constant_column(spec.missing_replacement, column.data_type, n)
        column = where_column(missing, replacement, column)
    return column


@dataclass(frozen=True)
class FieldInfo:
    """What compile time needs to know about a field: its data type and optype."""

    data_type: str
    optype: str


@dataclass
class Scope:
    """The fields visible to a model at load time (for type checks and constant parsing)."""

    fields: dict[str, FieldInfo]
    parent: Scope | None = None

    def lookup(self, name: str, element: Element, *, where: str) -> FieldInfo:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.fields:
                return scope.fields[name]
            scope = scope.parent
        raise ModelRejected(
            f"PMML element {element.tag} (line {element.line}) refers to the undefined field "
            f"'{name}'",
            where=where,
        )

    def child(self) -> Scope:
        return Scope({}, self)


class Evaluable:
    """Something that computes a :class:`Column` in an :class:`Env` (derived fields, outputs)."""

    data_type: str

    def evaluate(self, env: Env) -> Column:
        raise NotImplementedError


@dataclass
class Env:
    """Field values for one batch: computed lazily, cached, chained to the enclosing model."""

    n: int
    values: dict[str, Column]
    lazy: Mapping[str, Evaluable] = field(default_factory=dict)
    parent: Env | None = None
    where: str = ""
    origin: np.ndarray | None = None  # batch row numbers, when this is a subset of rows
    _busy: set[str] = field(default_factory=set)

    def first_row(self, mask: BoolArray) -> int:
        """The batch row number of the first row in ``mask`` (for error messages)."""
        index = int(np.flatnonzero(mask)[0])
        return int(self.origin[index]) if self.origin is not None else index

    def get(self, name: str) -> Column:
        env: Env | None = self
        while env is not None:
            if name in env.values:
                return env.values[name]
            if name in env.lazy:
                if name in env._busy:
                    raise ModelRejected(
                        f"derived field '{name}' refers to itself", where=self.where
                    )
                env._busy.add(name)
                try:
                    column = env.lazy[name].evaluate(env)
                finally:
                    env._busy.discard(name)
                env.values[name] = column
                return column
            env = env.parent
        raise ModelRejected(f"field '{name}' has no value", where=self.where)

    def child(self, lazy: Mapping[str, Evaluable] | None = None) -> Env:
        return Env(self.n, {}, lazy or {}, self, self.where, self.origin)

    def take(self, rows: np.ndarray) -> Env:
        """The same fields for a subset of rows (derived fields stay lazy)."""
        parent = self.parent.take(rows) if self.parent is not None else None
        values = {name: Column(c.values[rows], c.data_type) for name, c in self.values.items()}
        origin = self.origin[rows] if self.origin is not None else np.asarray(rows)
        return Env(len(rows), values, self.lazy, parent, self.where, origin)
