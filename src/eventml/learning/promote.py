"""Promote a model version through a replay gate, as a route event (DESIGN §7).

``as_``:

- ``shadow``: the current champion answers, the candidate is scored as ``shadow``;
- ``canary:PCT``: decider ``split``, the current champion at ``100 - PCT`` and the candidate
  at ``PCT`` (the current champion stays ``champion``);
- ``champion``: the candidate answers alone.

The gate is an expression over the replay's metrics (:mod:`eventml.learning.replay`), for
example ``auc >= served_auc + 0.005 and psi < 0.25``. Without one, classifiers need
``auc >= served_auc`` and regressors ``rmse <= served_rmse``. The grammar is tiny and
parsed here, never evaluated by Python::

    gate  := cmp ("and" cmp)*
    cmp   := sum ("<" | "<=" | ">" | ">=" | "==" | "!=") sum
    sum   := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := "-" unary | NUMBER | NAME | "(" sum ")"

>>> Gate.parse("auc >= served_auc + 0.005").check({"auc": 0.80, "served_auc": 0.79})
(True, ['auc >= served_auc + 0.005: 0.8 >= 0.795 passed'])
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventml import events as ev
from eventml.errors import InputError, expected_got
from eventml.learning.replay import Replay, replay
from eventml.learning.train import current_champion
from eventml.log import Log
from eventml.models.registry import Registry
from eventml.serving.routes import deploy
from eventml.serving.spec import RouteSpec

_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)|([A-Za-z_][A-Za-z0-9_]*)|(<=|>=|==|!=|[<>+\-*/()]))"
)
_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
}  # fmt: skip
Node = tuple[Any, ...]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise InputError(
                expected_got(
                    "a number, a metric name or one of < <= > >= == != + - * / ( )",
                    text[pos:].strip()[:20],
                ),
                where=f"--require at column {pos + 1}",
            )
        num, name, op = m.groups()
        if num is not None:
            out.append(("num", num))
        elif name is not None:
            out.append(("and", name) if name == "and" else ("name", name))
        else:
            out.append(("op", op))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise InputError(f"expected more after {self.text!r}, got the end", where="--require")
        self.i += 1
        return tok

    def gate(self) -> list[Node]:
        checks = [self.cmp()]
        while self.peek() == ("and", "and"):
            self.take()
            checks.append(self.cmp())
        if self.peek() is not None:
            raise InputError(expected_got("'and' or the end", self.peek()[1]), where="--require")  # type: ignore[index]
        return checks

    def cmp(self) -> Node:
        start = self.i
        left = self.sum()
        tok = self.peek()
        if tok is None or tok[0] != "op" or tok[1] not in _CMP:
            got = tok[1] if tok else "the end"
            raise InputError(expected_got("a comparison (< <= > >= == !=)", got), where="--require")
        self.take()
        right = self.sum()
        text = " ".join(t[1] for t in self.toks[start : self.i])
        return ("cmp", tok[1], left, right, text)

    def sum(self) -> Node:
        node = self.term()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in "+-":
            self.take()
            node = ("arith", tok[1], node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in "*/":
            self.take()
            node = ("arith", tok[1], node, self.unary())
        return node

    def unary(self) -> Node:
        kind, value = self.take()
        if (kind, value) == ("op", "-"):
            return ("neg", self.unary())
        if kind == "num":
            return ("num", float(value))
        if kind == "name":
            return ("name", value)
        if (kind, value) == ("op", "("):
            node = self.sum()
            if self.take() != ("op", ")"):
                raise InputError("expected ')' to close '('", where="--require")
            return node
        raise InputError(expected_got("a number, a metric name or '('", value), where="--require")


def _value(node: Node, metrics: Mapping[str, float]) -> float:
    kind = node[0]
    if kind == "num":
        return float(node[1])
    if kind == "name":
        if node[1] not in metrics:
            raise InputError(
                f"expected a replay metric, got {node[1]!r}; known: {', '.join(sorted(metrics))}",
                where="--require",
            )
        return float(metrics[node[1]])
    if kind == "neg":
        return -_value(node[1], metrics)
    a, b = _value(node[2], metrics), _value(node[3], metrics)
    if node[1] == "/" and b == 0:
        raise InputError("expected a non-zero divisor, got 0", where="--require")
    return _ARITH[node[1]](a, b)


@dataclass(frozen=True)
class Gate:
    """A parsed ``--require`` expression."""

    text: str
    checks: tuple[Node, ...]

    @classmethod
    def parse(cls, text: str) -> Gate:
        if not text.strip():
            raise InputError("expected a gate expression, got an empty one", where="--require")
        return cls(text, tuple(_Parser(text).gate()))

    def check(self, metrics: Mapping[str, float]) -> tuple[bool, list[str]]:
        """Whether every comparison holds (NaN never does), and one line per comparison."""
        ok = True
        lines: list[str] = []
        for _, op, left, right, text in self.checks:
            a, b = _value(left, metrics), _value(right, metrics)
            passed = not (math.isnan(a) or math.isnan(b)) and _CMP[op](a, b)
            ok &= passed
            lines.append(f"{text}: {a:.6g} {op} {b:.6g} {'passed' if passed else 'FAILED'}")
        return ok, lines


def default_gate(kind: str) -> str:
    return "auc >= served_auc" if kind == "classification" else "rmse <= served_rmse"


def route_spec(as_: str, candidate: str, champion: str | None, endpoint: str) -> RouteSpec:
    """The route ``--as`` asks for (see the module docstring)."""
    if as_ == "champion":
        return RouteSpec(champion=candidate)
    if as_ != "shadow" and not as_.startswith("canary:"):
        raise InputError(expected_got("--as shadow, canary:PCT or champion", as_))
    if champion is None:
        raise InputError(
            f"expected a current champion of endpoint {endpoint!r} for --as {as_}, got no route"
        )
    if as_ == "shadow":
        return RouteSpec(champion=champion, shadow=[candidate])
    pct_text = as_.partition(":")[2]
    try:
        pct = float(pct_text)
    except ValueError:
        pct = math.nan
    if not 0 < pct < 100:
        raise InputError(expected_got("canary:PCT with 0 < PCT < 100", as_))
    if champion == candidate:
        raise InputError(f"expected a candidate other than the champion {champion} for a canary")
    return RouteSpec(
        champion=champion, split={champion: 100 - pct, candidate: pct}, decider="split"
    )


@dataclass
class Promotion:
    """What ``promote`` did: the replay, the gate's lines and the route appended."""

    route: ev.RouteChanged
    replay: Replay
    gate: str
    checks: list[str]


def promote(
    log: Log,
    endpoint: str,
    ref: str,
    *,
    as_: str = "champion",
    require: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Promotion:
    """Replay ``ref`` on ``endpoint``; if the gate holds, append the route ``as_`` asks for.

    A failed gate raises :class:`~eventml.errors.InputError` with every comparison and
    appends nothing.
    """
    gate = Gate.parse(require) if require is not None else None
    d = Registry.from_log(log).resolve(ref)
    candidate = f"{d.name}:{d.version}"
    champion = current_champion(log, endpoint)
    spec = route_spec(as_, candidate, champion, endpoint)
    result = replay(log, candidate, endpoint, since=since, until=until, progress=progress)
    gate = gate or Gate.parse(default_gate(result.kind))
    ok, lines = gate.check(result.metrics)
    if not ok:
        raise InputError(
            f"refused to promote {candidate} on {endpoint!r}: the replay gate {gate.text!r} failed ("
            + "; ".join(lines)
            + ")"
        )
    route = deploy(
        log, endpoint, spec=spec, reason=f"promote {candidate} as {as_}; gate {gate.text}: passed"
    )
    return Promotion(route=route, replay=result, gate=gate.text, checks=lines)
