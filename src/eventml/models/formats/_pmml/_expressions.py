"""Expressions: DerivedField, Constant, FieldRef, NormContinuous, NormDiscrete, Discretize,
MapValues and Apply (functions in ``_functions.py``), all evaluated column-wise.

As in JPMML: ``mapMissingTo`` replaces the result when an argument is missing, a missing result
becomes ``defaultValue``, ``if`` evaluates only the branch each row takes, and a function that is
not missing-value tolerant refuses a missing argument (:class:`SchemaMismatch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eventml.errors import ModelRejected, SchemaMismatch

from ._fields import Env, Evaluable, FieldInfo, Interval, Scope, check_data_type, parse_value
from ._functions import AGGREGATES, BOOLEAN_RESULTS, FUNCTIONS, SPECIAL, TOLERANT
from ._values import (
    BoolArray,
    Column,
    FloatArray,
    Scalar,
    cast_column,
    constant_column,
    where_column,
)
from ._xml import Element, missing_attribute, unsupported

Expr = Evaluable


@dataclass(frozen=True)
class ConstantExpr(Expr):
    value: Scalar | None
    data_type: str

    def evaluate(self, env: Env) -> Column:
        return constant_column(self.value, self.data_type, env.n)


@dataclass(frozen=True)
class FieldRef(Expr):
    field: str
    data_type: str
    map_missing_to: Scalar | None = None

    def evaluate(self, env: Env) -> Column:
        column = env.get(self.field)
        if self.map_missing_to is not None:
            missing = column.missing()
            if missing.any():
                fill = constant_column(self.map_missing_to, column.data_type, env.n)
                column = where_column(missing, fill, column)
        return column


@dataclass(frozen=True)
class NormContinuous(Expr):
    field: str
    orig: tuple[float, ...]
    norm: tuple[float, ...]
    outliers: str
    map_missing_to: float | None
    data_type: str = "double"

    def evaluate(self, env: Env) -> Column:
        x = cast_column(env.get(self.field), "double").floats()
        orig, norm = np.array(self.orig), np.array(self.norm)
        # segment k spans orig[k]..orig[k+1]; values outside extrapolate the end segments
        k = np.clip(np.searchsorted(orig, x, side="left") - 1, 0, len(orig) - 2)
        k = np.where(np.isnan(x), 0, k)
        y = norm[k] + (x - orig[k]) / (orig[k + 1] - orig[k]) * (norm[k + 1] - norm[k])
        below, above = x < orig[0], x > orig[-1]
        if self.outliers == "asMissingValues":
            y = np.where(below | above, np.nan, y)
        elif self.outliers == "asExtremeValues":
            y = np.where(below, norm[0], np.where(above, norm[-1], y))
        if self.map_missing_to is not None:
            y = np.where(np.isnan(x), self.map_missing_to, y)
        return Column(y, "double")


def denormalize(orig: tuple[float, ...], norm: tuple[float, ...], y: FloatArray) -> FloatArray:
    """Inverse of NormContinuous (used by NeuralOutputs for regression)."""
    o, m = np.array(orig), np.array(norm)
    k = np.clip(np.searchsorted(m, y, side="left") - 1, 0, len(m) - 2)
    k = np.where(np.isnan(y), 0, k)
    return np.asarray(o[k] + (y - m[k]) / (m[k + 1] - m[k]) * (o[k + 1] - o[k]))


@dataclass(frozen=True)
class NormDiscrete(Expr):
    field: str
    value: Scalar
    map_missing_to: float | None
    data_type: str = "double"

    def evaluate(self, env: Env) -> Column:
        column = env.get(self.field)
        missing = column.missing()
        if column.numeric:
            hit = column.floats() == float(self.value)
        else:
            hit = np.equal(column.values, self.value)
        fill = np.nan if self.map_missing_to is None else self.map_missing_to
        return Column(np.where(missing, fill, hit.astype(np.float64)), "double")


@dataclass(frozen=True)
class Discretize(Expr):
    field: str
    bins: tuple[tuple[Interval, Scalar], ...]
    map_missing_to: Scalar | None
    default: Scalar | None
    data_type: str

    def evaluate(self, env: Env) -> Column:
        x = cast_column(env.get(self.field), "double").floats()
        missing = np.isnan(x)
        out = constant_column(self.default, self.data_type, env.n)
        done = missing.copy()
        for interval, value in self.bins:
            hit = ~done & interval.contains(x)
            out = where_column(hit, constant_column(value, self.data_type, env.n), out)
            done |= hit
        return where_column(
            missing, constant_column(self.map_missing_to, self.data_type, env.n), out
        )


@dataclass(frozen=True)
class MapValues(Expr):
    inputs: tuple[tuple[str, str], ...]  # (field, data type of the table column)
    rows: tuple[tuple[tuple[Scalar, ...], Scalar], ...]
    map_missing_to: Scalar | None
    default: Scalar | None
    data_type: str

    def evaluate(self, env: Env) -> Column:
        columns = [cast_column(env.get(name), dt) for name, dt in self.inputs]
        missing = np.logical_or.reduce([c.missing() for c in columns])
        out = constant_column(self.default, self.data_type, env.n)
        done = missing.copy()
        for keys, value in self.rows:
            hit = ~done
            for column, key in zip(columns, keys, strict=True):
                hit &= column.floats() == key if column.numeric else np.equal(column.values, key)
            out = where_column(hit, constant_column(value, self.data_type, env.n), out)
            done |= hit
        return where_column(
            missing, constant_column(self.map_missing_to, self.data_type, env.n), out
        )


@dataclass(frozen=True)
class Apply(Expr):
    function: str
    args: tuple[Expr, ...]
    map_missing_to: Scalar | None
    default: Scalar | None
    invalid: str
    data_type: str

    def evaluate(self, env: Env) -> Column:
        n = env.n
        if self.function == "if":
            return self._if(env)
        columns = [arg.evaluate(env) for arg in self.args]
        if self.function in ("isMissing", "isNotMissing"):
            missing = columns[0].missing()
            hit = missing if self.function == "isMissing" else ~missing
            return Column(hit.astype(np.float64), "boolean")
        missings = [c.missing() for c in columns]
        any_missing = np.logical_or.reduce(missings)
        if self.map_missing_to is None and self.function not in TOLERANT and any_missing.any():
            raise SchemaMismatch(
                f"function {self.function} cannot take a missing value "
                f"(row {env.first_row(any_missing)})",
                where=env.where,
                row=env.first_row(any_missing),
            )
        if self.function in AGGREGATES:  # missing values are left out, as in JPMML
            any_missing = np.logical_and.reduce(missings)
        if self.function in ("isIn", "isNotIn"):
            first = columns[0]
            hit = np.zeros(n, dtype=bool)
            for other in columns[1:]:
                other = cast_column(other, first.data_type)
                hit |= (
                    first.floats() == other.floats()
                    if first.numeric
                    else np.equal(first.values, other.values)
                )
            result = Column(
                (hit if self.function == "isIn" else ~hit).astype(np.float64), "boolean"
            )
        elif self.function == "/" and self.data_type == "integer":
            result = self._integer_division(columns, any_missing, env)
        else:
            result = FUNCTIONS[self.function][2](columns, n)
            if result.numeric and result.data_type != self.data_type:
                result = cast_column(result, self.data_type)
        result = self._check_invalid(result, any_missing, env)
        return self._fill(result, any_missing, n)

    def _if(self, env: Env) -> Column:
        """``if`` evaluates only the branch each row takes (as JPMML does, lazily)."""
        condition = self.args[0].evaluate(env)
        truthy = cast_column(condition, "boolean").floats()
        missing = np.isnan(truthy)
        if missing.any() and self.map_missing_to is None:
            raise SchemaMismatch(
                f"function if cannot take a missing condition (row {env.first_row(missing)})",
                where=env.where,
                row=env.first_row(missing),
            )
        result = constant_column(None, self.data_type, env.n)
        for branch, rows in ((1, ~missing & (truthy != 0)), (2, ~missing & (truthy == 0))):
            index = np.flatnonzero(rows)
            if not index.size or branch >= len(self.args):
                continue
            part = cast_column(self.args[branch].evaluate(env.take(index)), self.data_type)
            if part.numeric:
                result.values[index] = part.floats()
            else:
                result.values[index] = part.values
        return self._fill(result, missing, env.n)

    def _integer_division(self, columns: list[Column], missing: BoolArray, env: Env) -> Column:
        """Java int division: truncates towards zero; dividing by zero is an error."""
        left, right = columns[0].floats(), columns[1].floats()
        zero = ~missing & (right == 0)
        if zero.any():
            raise SchemaMismatch(
                f"integer division by zero (row {env.first_row(zero)})",
                where=env.where,
                row=env.first_row(zero),
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            return Column(np.trunc(left / np.where(right == 0, 1, right)), "integer")

    def _check_invalid(self, result: Column, any_missing: BoolArray, env: Env) -> Column:
        if not result.numeric:
            return result
        bad = ~any_missing & ~np.isfinite(result.floats())
        if not bad.any():
            return result
        if self.invalid == "asMissing":
            return Column(np.where(bad, np.nan, result.floats()), result.data_type)
        if self.invalid == "asIs":
            return result
        row = env.first_row(bad)
        raise SchemaMismatch(
            f"function {self.function} has no finite result (row {row})", where=env.where, row=row
        )

    def _fill(self, result: Column, any_missing: BoolArray, n: int) -> Column:
        if self.map_missing_to is not None and any_missing.any():
            fill = constant_column(self.map_missing_to, result.data_type, n)
            result = where_column(any_missing, fill, result)
        if self.default is not None:
            missing = result.missing()
            if missing.any():
                result = where_column(
                    missing, constant_column(self.default, result.data_type, n), result
                )
        return result


@dataclass(frozen=True)
class Cast(Expr):
    """A DerivedField: its expression cast to the declared data type."""

    name: str
    expr: Expr
    data_type: str

    def evaluate(self, env: Env) -> Column:
        column = self.expr.evaluate(env)
        try:
            return cast_column(column, self.data_type)
        except ValueError as exc:
            raise SchemaMismatch(
                f"derived field '{self.name}' cannot be a {self.data_type}: {exc}", where=env.where
            ) from None


EXPRESSION_TAGS = frozenset(
    {"Constant", "FieldRef", "NormContinuous", "NormDiscrete", "Discretize", "MapValues", "Apply",
     "TextIndex", "Aggregate", "Lag"}
)  # fmt: skip


def find_expression(element: Element, scope: Scope, *, where: str) -> Expr:
    """Compile the single expression child of a DerivedField / OutputField / NeuralInput."""
    for child in element.elements():
        if child.tag in EXPRESSION_TAGS:
            return compile_expression(child, scope, where=where)
    raise missing_attribute(element, "expression", where=where)


def _optional(element: Element, name: str, data_type: str, *, where: str) -> Scalar | None:
    text = element.get(name)
    return None if text is None else parse_value(element, text, data_type, where=where)


def _field(element: Element, scope: Scope, *, where: str) -> tuple[str, FieldInfo]:
    name = element.get("field")
    if name is None:
        raise missing_attribute(element, "field", where=where)
    return name, scope.lookup(name, element, where=where)


def compile_expression(element: Element, scope: Scope, *, where: str) -> Expr:
    """Compile one expression element; anything we do not implement is refused here."""
    tag = element.get("dataType")
    del tag
    if element.tag == "Constant":
        data_type = check_data_type(element, where=where, default=_guess_type(element.text))
        if element.get("missing") == "true":
            return ConstantExpr(None, data_type)
        return ConstantExpr(
            parse_value(element, element.text.strip(), data_type, where=where), data_type
        )
    if element.tag == "FieldRef":
        name, info = _field(element, scope, where=where)
        mmt = _optional(element, "mapMissingTo", info.data_type, where=where)
        return FieldRef(name, info.data_type, mmt)
    if element.tag == "NormContinuous":
        return _norm_continuous(element, scope, where=where)
    if element.tag == "NormDiscrete":
        name, info = _field(element, scope, where=where)
        value = element.get("value")
        if value is None:
            raise missing_attribute(element, "value", where=where)
        mmt = _optional(element, "mapMissingTo", "double", where=where)
        return NormDiscrete(name, parse_value(element, value, info.data_type, where=where), mmt)  # type: ignore[arg-type]
    if element.tag == "Discretize":
        return _discretize(element, scope, where=where)
    if element.tag == "MapValues":
        return _map_values(element, scope, where=where)
    if element.tag == "Apply":
        return _apply(element, scope, where=where)
    raise unsupported(element, where=where)


def _guess_type(text: str) -> str:
    """JPMML's type for a Constant without dataType: integer, double or string."""
    try:
        int(text.strip())
    except ValueError:
        pass
    else:
        return "integer"
    try:
        float(text)
    except ValueError:
        return "string"
    return "double"


def _norm_continuous(element: Element, scope: Scope, *, where: str) -> Expr:
    name, _info = _field(element, scope, where=where)
    outliers = element.get("outliers", "asIs") or "asIs"
    if outliers not in ("asIs", "asMissingValues", "asExtremeValues"):
        raise unsupported(element, where=where, detail=f'outliers="{outliers}"')
    points = []
    for norm in element.findall("LinearNorm"):
        try:
            points.append((float(norm.get("orig") or ""), float(norm.get("norm") or "")))
        except ValueError:
            raise missing_attribute(norm, "orig/norm", where=where) from None
    if len(points) < 2:
        raise ModelRejected(
            f"NormContinuous (line {element.line}) needs at least two LinearNorm elements",
            where=where,
        )
    mmt = _optional(element, "mapMissingTo", "double", where=where)
    orig, norm_values = zip(*points, strict=True)
    return NormContinuous(name, orig, norm_values, outliers, mmt)  # type: ignore[arg-type]


def _discretize(element: Element, scope: Scope, *, where: str) -> Expr:
    from ._fields import parse_interval

    name, _info = _field(element, scope, where=where)
    data_type = check_data_type(element, where=where, default="string")
    bins = []
    for child in element.findall("DiscretizeBin"):
        interval = child.find("Interval")
        value = child.get("binValue")
        if interval is None or value is None:
            raise missing_attribute(child, "Interval and binValue", where=where)
        bins.append(
            (
                parse_interval(interval, where=where),
                parse_value(child, value, data_type, where=where),
            )
        )
    return Discretize(
        name,
        tuple(bins),
        _optional(element, "mapMissingTo", data_type, where=where),
        _optional(element, "defaultValue", data_type, where=where),
        data_type,
    )


def _map_values(element: Element, scope: Scope, *, where: str) -> Expr:
    data_type = check_data_type(element, where=where, default="string")
    output = element.get("outputColumn")
    if output is None:
        raise missing_attribute(element, "outputColumn", where=where)
    pairs = []
    for pair in element.findall("FieldColumnPair"):
        name, info = _field(pair, scope, where=where)
        column = pair.get("column")
        if column is None:
            raise missing_attribute(pair, "column", where=where)
        pairs.append((name, info.data_type, column))
    table = element.find("InlineTable")
    if table is None:
        raise unsupported(element, where=where, detail="without an InlineTable")
    rows = []
    for row in table.findall("row"):
        cells = {cell.tag: cell.text for cell in row.elements()}
        if output not in cells or any(col not in cells for _, _, col in pairs):
            continue  # JPMML skips incomplete rows
        keys = tuple(parse_value(row, cells[col], dt, where=where) for _, dt, col in pairs)
        rows.append((keys, parse_value(row, cells[output], data_type, where=where)))
    return MapValues(
        tuple((name, dt) for name, dt, _ in pairs),
        tuple(rows),
        _optional(element, "mapMissingTo", data_type, where=where),
        _optional(element, "defaultValue", data_type, where=where),
        data_type,
    )


def _apply(element: Element, scope: Scope, *, where: str) -> Expr:
    function = element.get("function", "")
    args = tuple(
        compile_expression(child, scope, where=where)
        for child in element.elements()
        if child.tag in EXPRESSION_TAGS
    )
    if function in FUNCTIONS:
        low, high, _ = FUNCTIONS[function]
    elif function in SPECIAL:
        low, high = (2, 3) if function == "if" else (1, 1) if "Missing" in function else (2, 99)
    else:
        raise unsupported(element, where=where, detail=f'function="{function}"')
    if not low <= len(args) <= high:
        raise ModelRejected(
            f"Apply function {function} (line {element.line}) takes {low}..{high} arguments, "
            f"got {len(args)}",
            where=where,
        )
    invalid = element.get("invalidValueTreatment", "returnInvalid") or "returnInvalid"
    if invalid not in ("returnInvalid", "asIs", "asMissing"):
        raise unsupported(element, where=where, detail=f'invalidValueTreatment="{invalid}"')
    data_type = _result_type(function, args)
    return Apply(
        function,
        args,
        _optional(element, "mapMissingTo", data_type, where=where),
        _optional(element, "defaultValue", data_type, where=where),
        invalid,
        data_type,
    )


def _result_type(function: str, args: tuple[Expr, ...]) -> str:
    if function in ("if",):
        return args[1].data_type
    if function in ("+", "-", "*", "/", "min", "max", "sum", "product"):
        types = {arg.data_type for arg in args}
        if types <= {"integer", "boolean"}:
            return "integer"  # JPMML computes integer arithmetic in Java ints: 7 / 10 == 0
        return "float" if "double" not in types and "float" in types else "double"
    if function in ("uppercase", "lowercase", "trimBlanks"):
        return "string"
    if function in ("floor", "ceil", "round", "threshold"):
        return "integer"
    if function in SPECIAL or function in BOOLEAN_RESULTS:
        return "boolean"
    return "double"


def compile_derived_fields(elements: list[Element], scope: Scope, *, where: str) -> dict[str, Expr]:
    """Compile DerivedFields (names registered in ``scope`` first, so order does not matter)."""
    for element in elements:
        name = element.get("name")
        if name is None:
            raise missing_attribute(element, "name", where=where)
        scope.fields[name] = FieldInfo(
            check_data_type(element, where=where), element.get("optype", "continuous") or ""
        )
    out: dict[str, Expr] = {}
    for element in elements:
        name = element.get("name", "") or ""
        expr = find_expression(element, scope, where=where)
        out[name] = Cast(name, expr, scope.fields[name].data_type)
    return out


def local_transformations(model: Element, scope: Scope, *, where: str) -> Mapping[str, Expr]:
    """Compile a model's LocalTransformations into ``scope``."""
    local = model.find("LocalTransformations")
    if local is None:
        return {}
    for child in local.elements():
        if child.tag != "DerivedField":
            raise unsupported(child, where=where)
    return compile_derived_fields(local.findall("DerivedField"), scope, where=where)
