"""Predicates (SimplePredicate, CompoundPredicate, SimpleSetPredicate, True, False).

A predicate evaluates to three-valued logic over all rows: :class:`Tri` holds ``true`` and
``unknown`` masks (an unknown result comes from a missing input, as in JPMML).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._fields import Env, Scope, check_data_type, parse_value
from ._values import BoolArray, Scalar, cast_column
from ._xml import Element, missing_attribute, unsupported

OPERATORS = (
    "equal",
    "notEqual",
    "lessThan",
    "lessOrEqual",
    "greaterThan",
    "greaterOrEqual",
    "isMissing",
    "isNotMissing",
)


class Tri(NamedTuple):
    """Three-valued result per row: ``true`` and ``unknown`` (false = neither)."""

    true: BoolArray
    unknown: BoolArray

    @property
    def false(self) -> BoolArray:
        return np.asarray(~self.true & ~self.unknown)


class Predicate:
    """A compiled predicate."""

    def evaluate(self, env: Env) -> Tri:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Predicate):
    value: bool

    def evaluate(self, env: Env) -> Tri:
        return Tri(np.full(env.n, self.value), np.zeros(env.n, dtype=bool))


def compare(x: np.ndarray, op: str, value: Scalar) -> BoolArray:
    """Apply a comparison operator to present values (numbers or strings)."""
    if op == "equal":
        return np.asarray(x == value)
    if op == "notEqual":
        return np.asarray(x != value)
    if op == "lessThan":
        return np.asarray(x < value)
    if op == "lessOrEqual":
        return np.asarray(x <= value)
    if op == "greaterThan":
        return np.asarray(x > value)
    return np.asarray(x >= value)


@dataclass(frozen=True)
class Simple(Predicate):
    """``SimplePredicate``; ``value`` already parsed to the field's data type."""

    field: str
    op: str
    value: Scalar | None
    data_type: str

    def evaluate(self, env: Env) -> Tri:
        column = env.get(self.field)
        missing = column.missing()
        if self.op == "isMissing":
            return Tri(missing, np.zeros(env.n, dtype=bool))
        if self.op == "isNotMissing":
            return Tri(~missing, np.zeros(env.n, dtype=bool))
        column = cast_column(column, self.data_type)
        if column.numeric:
            with np.errstate(invalid="ignore"):
                result = compare(column.floats(), self.op, float(self.value or 0.0))
        else:
            text = np.array(np.where(missing, "", column.values).tolist(), dtype=str)
            result = compare(text, self.op, str(self.value))
        return Tri(np.asarray(result & ~missing), missing)


@dataclass(frozen=True)
class SimpleSet(Predicate):
    field: str
    is_in: bool
    values: tuple[Scalar, ...]
    data_type: str

    def evaluate(self, env: Env) -> Tri:
        column = cast_column(env.get(self.field), self.data_type)
        missing = column.missing()
        if column.numeric:
            hit = np.isin(column.floats(), np.array(self.values, dtype=np.float64))
        else:
            hit = np.isin(column.values, np.array(self.values, dtype=object))
        result = hit if self.is_in else ~hit
        return Tri(np.asarray(result & ~missing), missing)


@dataclass(frozen=True)
class Compound(Predicate):
    op: str
    parts: tuple[Predicate, ...]

    def evaluate(self, env: Env) -> Tri:
        results = [part.evaluate(env) for part in self.parts]
        if self.op == "surrogate":
            true = results[-1].true.copy()
            unknown = results[-1].unknown.copy()
            for result in reversed(results[:-1]):
                known = ~result.unknown
                true = np.where(known, result.true, true)
                unknown = np.where(known, False, unknown)
            return Tri(true, unknown)
        any_unknown = np.logical_or.reduce([r.unknown for r in results])
        if self.op == "and":
            any_false = np.logical_or.reduce([r.false for r in results])
            return Tri(~any_false & ~any_unknown, ~any_false & any_unknown)
        if self.op == "or":
            any_true = np.logical_or.reduce([r.true for r in results])
            return Tri(any_true, ~any_true & any_unknown)
        parity = np.logical_xor.reduce([r.true for r in results])  # xor
        return Tri(parity & ~any_unknown, any_unknown)


def parse_array(element: Element, data_type: str, *, where: str) -> tuple[Scalar, ...]:
    """Parse a PMML ``Array`` (space-separated, double quotes for values with spaces)."""
    kind = element.get("type", "string")
    if kind not in ("string", "int", "real"):
        raise unsupported(element, where=where, detail=f'type="{kind}"')
    lexer = shlex.shlex(element.text, posix=True)
    lexer.whitespace_split = True
    lexer.quotes = '"'
    lexer.escape = "\\"
    lexer.commenters = ""
    return tuple(parse_value(element, token, data_type, where=where) for token in lexer)


def compile_predicate(element: Element, scope: Scope, *, where: str) -> Predicate:
    """Compile one predicate element."""
    tag = element.tag
    if tag == "True":
        return Constant(True)
    if tag == "False":
        return Constant(False)
    if tag == "SimplePredicate":
        name, op = element.get("field"), element.get("operator")
        if name is None:
            raise missing_attribute(element, "field", where=where)
        if op not in OPERATORS:
            raise unsupported(element, where=where, detail=f'operator="{op}"')
        info = scope.lookup(name, element, where=where)
        if op in ("isMissing", "isNotMissing"):
            return Simple(name, op, None, info.data_type)
        text = element.get("value")
        if text is None:
            raise missing_attribute(element, "value", where=where)
        return Simple(
            name, op, parse_value(element, text, info.data_type, where=where), info.data_type
        )
    if tag == "SimpleSetPredicate":
        name, op = element.get("field"), element.get("booleanOperator")
        if name is None:
            raise missing_attribute(element, "field", where=where)
        if op not in ("isIn", "isNotIn"):
            raise unsupported(element, where=where, detail=f'booleanOperator="{op}"')
        array = element.find("Array")
        if array is None:
            raise missing_attribute(element, "Array", where=where)
        info = scope.lookup(name, element, where=where)
        values = parse_array(array, info.data_type, where=where)
        return SimpleSet(name, op == "isIn", values, info.data_type)
    if tag == "CompoundPredicate":
        op = element.get("booleanOperator")
        if op not in ("and", "or", "xor", "surrogate"):
            raise unsupported(element, where=where, detail=f'booleanOperator="{op}"')
        parts = tuple(compile_predicate(child, scope, where=where) for child in element.elements())
        if len(parts) < 2:
            raise missing_attribute(element, "two or more predicates", where=where)
        return Compound(op, parts)
    raise unsupported(element, where=where)


PREDICATE_TAGS = frozenset(
    {"True", "False", "SimplePredicate", "SimpleSetPredicate", "CompoundPredicate"}
)


def find_predicate(element: Element, scope: Scope, *, where: str) -> Predicate:
    """Compile the (single) predicate child of a Node or Segment."""
    for child in element.elements():
        if child.tag in PREDICATE_TAGS:
            return compile_predicate(child, scope, where=where)
    raise missing_attribute(element, "predicate", where=where)


__all__ = ["Predicate", "Tri", "check_data_type", "compile_predicate", "find_predicate"]
