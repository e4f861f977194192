"""TreeModel, flattened into arrays and walked for all rows (and many trees) at once.

Each tree becomes a table of nodes (children, predicate, result). :func:`walk` moves every
(row, tree) pair down one level per step, so the number of numpy calls grows with the tree depth,
not with the number of rows, nodes or trees. The walk follows JPMML-Evaluator's
``TreeModelEvaluator``: the first child whose predicate is true is entered; an unknown predicate
(missing input) is handled by ``missingValueStrategy`` (``none`` = false, ``nullPrediction``,
``lastPrediction``, ``defaultChild`` whose predicate is not evaluated); a node whose children are
all false ends with ``noTrueChildStrategy``. ``weightedConfidence`` and ``aggregateNodes`` are
refused, as JPMML refuses them.

Numeric comparisons are table lookups: outcome ``o`` = 0 (x < t), 1 (x == t), 2 (x > t) and an
operator is a 3-bit mask of the outcomes it accepts, so ``lessOrEqual`` at the threshold holds
exactly in float64 (thresholds of ``float`` fields are rounded to float32 like the inputs). Batches
without a missing input take the compiled one-comparison-per-level walk of ``_binary.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from eventml.errors import ModelRejected

from ._base import Context, Core, ModelInfo, Prediction, canonical, register
from ._binary import BinaryTables, binary_tables, walk
from ._fields import Env
from ._predicates import PREDICATE_TAGS, Constant, Predicate, Simple, find_predicate
from ._values import FloatArray
from ._xml import Element, missing_attribute, unsupported

IntArray = npt.NDArray[np.int64]

OP_MASKS = {  # bit 0: x < t, bit 1: x == t, bit 2: x > t
    "lessThan": 0b001,
    "lessOrEqual": 0b011,
    "equal": 0b010,
    "greaterOrEqual": 0b110,
    "greaterThan": 0b100,
    "notEqual": 0b101,
}
NODE_CHILDREN = PREDICATE_TAGS | {"ScoreDistribution", "Node", "Partition"}
MISSING_STRATEGIES = frozenset({"none", "nullPrediction", "lastPrediction", "defaultChild"})
NO_TRUE_CHILD = frozenset({"returnNullPrediction", "returnLastPrediction"})
KIND_TRUE, KIND_FALSE, KIND_COMPARE, KIND_GENERAL = 0, 1, 2, 3


@dataclass
class Forest:
    """One or more trees flattened into shared node arrays (trees keep their own roots)."""

    missing_strategy: str
    no_true_child: str
    fields: list[str] = field(default_factory=list)
    general: list[Predicate] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    children: list[list[int]] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    column: list[int] = field(default_factory=list)
    op: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    default_child: list[int] = field(default_factory=list)
    scores: list[str | None] = field(default_factory=list)
    distributions: list[dict[str, float] | None] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def add_tree(self, root: Element, scope_lookup: ScopeLookup) -> None:
        self.roots.append(self._add(root, scope_lookup))

    def _add(self, node: Element, lookup: ScopeLookup) -> int:
        index = len(self.kind)
        predicate = lookup.predicate(node)
        self.children.append([])
        self.default_child.append(-1)
        self.lines.append(node.line)
        self.score_of(node, lookup.where)
        if isinstance(predicate, Constant):
            self._push(KIND_TRUE if predicate.value else KIND_FALSE)
        elif (
            isinstance(predicate, Simple) and predicate.op in OP_MASKS and lookup.numeric(predicate)
        ):
            if predicate.field not in self.fields:
                self.fields.append(predicate.field)
            self._push(
                KIND_COMPARE,
                self.fields.index(predicate.field),
                OP_MASKS[predicate.op],
                float(predicate.value or 0.0),
            )
        else:
            self.general.append(predicate)
            self._push(KIND_GENERAL, len(self.general) - 1)
        default_id = node.get("defaultChild")
        child_ids = []
        for child in node.findall("Node"):
            child_ids.append(child.get("id"))
            self.children[index].append(self._add(child, lookup))
        if default_id is not None and default_id in child_ids:
            self.default_child[index] = self.children[index][child_ids.index(default_id)]
        if self.missing_strategy == "defaultChild" and self.children[index] and default_id is None:
            raise missing_attribute(node, "defaultChild", where=lookup.where)
        if default_id is not None and default_id not in child_ids:
            raise ModelRejected(
                f"Node (line {node.line}) names defaultChild {default_id}, not one of its children",
                where=lookup.where,
            )
        return index

    def _push(self, kind: int, column: int = -1, op: int = 0, threshold: float = 0.0) -> None:
        self.kind.append(kind)
        self.column.append(column)
        self.op.append(op)
        self.threshold.append(threshold)

    def score_of(self, node: Element, where: str) -> None:
        self.scores.append(node.get("score"))
        items = node.findall("ScoreDistribution")
        if not items:
            self.distributions.append(None)
            return
        use_probability = items[0].get("probability") is not None
        values: dict[str, float] = {}
        total = 0.0
        for item in items:
            label = item.get("value")
            raw = item.get("probability") if use_probability else item.get("recordCount")
            if label is None or raw is None:
                raise missing_attribute(item, "value and recordCount/probability", where=where)
            number = float(raw)
            total += number
            values[label] = number
        if total != 1.0 and total != 0.0:
            values = {label: number / total for label, number in values.items()}
        self.distributions.append(values)

    def freeze(self) -> FrozenForest:
        width = max((len(c) for c in self.children), default=0)
        table = np.full((len(self.children), max(width, 1)), -1, dtype=np.int64)
        for i, kids in enumerate(self.children):
            table[i, : len(kids)] = kids
        return FrozenForest(
            self.missing_strategy,
            self.no_true_child,
            list(self.fields),
            list(self.general),
            np.array(self.roots, dtype=np.int64),
            table,
            np.array([len(c) for c in self.children], dtype=np.int64),
            np.array(self.kind, dtype=np.int8),
            np.array(self.column, dtype=np.int64),
            np.array(self.op, dtype=np.int64),
            np.array(self.threshold, dtype=np.float64),
            np.array(self.default_child, dtype=np.int64),
            np.array([s is not None for s in self.scores]),
            binary_tables(
                self.children,
                (self.kind, KIND_COMPARE, KIND_TRUE),
                self.column,
                self.threshold,
                self.op,
                self.roots,
            ),
        )


@dataclass
class ScopeLookup:
    """Compiles node predicates and tells whether a field takes the numeric fast path."""

    context: Context
    info: ModelInfo
    where: str

    def predicate(self, node: Element) -> Predicate:
        for child in node.elements():
            if child.tag not in NODE_CHILDREN:
                raise unsupported(child, where=self.where)
        return find_predicate(node, self.info.scope, where=self.where)

    def numeric(self, predicate: Simple) -> bool:
        return predicate.data_type in ("double", "float", "integer")


@dataclass
class FrozenForest:
    missing_strategy: str
    no_true_child: str
    fields: list[str]
    general: list[Predicate]
    roots: IntArray
    children: IntArray
    n_children: IntArray
    kind: npt.NDArray[np.int8]
    column: IntArray
    op: IntArray
    threshold: FloatArray
    default_child: IntArray
    has_score: npt.NDArray[np.bool_]
    binary: BinaryTables | None

    def walk(self, env: Env) -> tuple[IntArray, bool]:
        """The result node of every (tree, row), shape [trees, n], -1 = no prediction; and
        whether every result is a leaf (the binary walk, which always ends in one)."""
        n = env.n
        matrix = np.empty((n, max(len(self.fields), 1)))
        for j, name in enumerate(self.fields):
            matrix[:, j] = env.get(name).floats()
        if self.binary is not None and not self.general and np.isfinite(matrix).all():
            return walk(self.binary, self.roots, matrix), True  # one comparison per level
        return self._walk(env, matrix), False

    def _walk(self, env: Env, matrix: FloatArray) -> IntArray:
        n, trees = env.n, len(self.roots)
        flat = matrix.ravel()
        width = matrix.shape[1]
        general = [p.evaluate(env) for p in self.general]
        g_true = np.stack([g.true for g in general]) if general else np.zeros((1, n), bool)
        g_unknown = np.stack([g.unknown for g in general]) if general else np.zeros((1, n), bool)

        rows = np.tile(np.arange(n), trees)
        node = np.repeat(self.roots, n)
        result = np.full(trees * n, -1, dtype=np.int64)
        true, unknown = self._status(node, rows, flat, width, g_true, g_unknown)
        active = np.flatnonzero(true & ~unknown)
        while active.size:
            cur = node[active]
            leaf = self.n_children[cur] == 0
            result[active[leaf]] = cur[leaf]
            active, cur = active[~leaf], cur[~leaf]
            if not active.size:
                break
            r = rows[active]
            decided = np.zeros(active.size, dtype=bool)
            nxt = np.full(active.size, -1, dtype=np.int64)
            stop = np.full(active.size, -2, dtype=np.int64)  # -2: keep walking
            for j in range(self.children.shape[1]):
                child = self.children[cur, j]
                open_ = ~decided & (child >= 0)
                if not open_.any():
                    break
                t, u = self._status(np.where(open_, child, 0), r, flat, width, g_true, g_unknown)
                go = open_ & t & ~u
                nxt[go] = child[go]
                decided |= go
                miss = open_ & u
                if self.missing_strategy != "none" and miss.any():
                    if self.missing_strategy == "nullPrediction":
                        stop[miss] = -1
                    elif self.missing_strategy == "lastPrediction":
                        stop[miss] = cur[miss]
                    else:  # defaultChild
                        nxt[miss] = self.default_child[cur[miss]]
                    decided |= miss
            none = ~decided
            if self.no_true_child == "returnLastPrediction":
                stop[none] = np.where(self.has_score[cur[none]], cur[none], -1)
            else:
                stop[none] = -1
            ended = stop != -2
            result[active[ended]] = stop[ended]
            keep = ~ended
            node[active[keep]] = nxt[keep]
            active = active[keep]
        return result.reshape(trees, n)

    def _status(
        self,
        node: IntArray,
        rows: IntArray,
        flat: FloatArray,
        width: int,
        g_true: npt.NDArray[np.bool_],
        g_unknown: npt.NDArray[np.bool_],
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        kind = self.kind[node]
        x = flat[rows * width + np.maximum(self.column[node], 0)]
        t = self.threshold[node]
        outcome = (x >= t).astype(np.int64) + (x > t)
        compare = (self.op[node] >> outcome) & 1 == 1
        is_compare = kind == KIND_COMPARE
        unknown = is_compare & np.isnan(x)
        true = np.where(is_compare, compare & ~unknown, kind == KIND_TRUE)
        general = kind == KIND_GENERAL
        if general.any():
            index = self.column[node[general]]
            true[general] = g_true[index, rows[general]]
            unknown[general] = g_unknown[index, rows[general]]
        return true, unknown


def parse_strategies(element: Element, *, where: str) -> tuple[str, str]:
    missing = element.get("missingValueStrategy", "none") or "none"
    if missing not in MISSING_STRATEGIES:
        raise unsupported(element, where=where, detail=f'missingValueStrategy="{missing}"')
    no_true = element.get("noTrueChildStrategy", "returnNullPrediction") or "returnNullPrediction"
    if no_true not in NO_TRUE_CHILD:
        raise unsupported(element, where=where, detail=f'noTrueChildStrategy="{no_true}"')
    if element.get("mathContext", "double") != "double":
        raise unsupported(
            element, where=where, detail=f'mathContext="{element.get("mathContext")}"'
        )
    return missing, no_true


class TreeCore(Core):
    """A TreeModel (or several with one schema, scored in one walk) and its leaf results."""

    def __init__(self, forest: Forest, function: str, classes: tuple[str, ...], where: str) -> None:
        self.function = function
        self.where = where
        self.frozen = forest.freeze()
        self.leaves_scored = all(
            s is not None for s, c in zip(forest.scores, forest.children, strict=True) if not c
        )
        self.lines = forest.lines
        n_nodes = len(forest.scores)
        if function == "regression":
            self.values = np.full(n_nodes + 1, np.nan)  # last slot: no prediction
            for i, score in enumerate(forest.scores):
                if score is not None:
                    try:
                        self.values[i] = float(score)
                    except ValueError:
                        raise ModelRejected(
                            f"Node (line {forest.lines[i]}) score {score!r} is not a number",
                            where=where,
                        ) from None
            self.classes = ()
            return
        seen = list(classes)
        forest.scores = [None if s is None else canonical(s, classes) for s in forest.scores]
        forest.distributions = [
            None if d is None else {canonical(k, classes): v for k, v in d.items()}
            for d in forest.distributions
        ]
        for score, dist in zip(forest.scores, forest.distributions, strict=True):
            for label in [score, *(dist or {})]:
                if label is not None and label not in seen:
                    seen.append(label)
        self.classes = tuple(seen)
        index = {label: i for i, label in enumerate(self.classes)}
        self.probabilities = np.full((n_nodes + 1, len(self.classes)), np.nan)
        self.labels = np.full(n_nodes + 1, None, dtype=object)
        for i, (score, dist) in enumerate(zip(forest.scores, forest.distributions, strict=True)):
            self.labels[i] = score
            row = np.zeros(len(self.classes))
            if dist is None:
                if score is not None:
                    row[index[score]] = 1.0
            else:
                for label, p in dist.items():
                    row[index[label]] = p
            self.probabilities[i] = row

    def leaves(self, env: Env) -> tuple[IntArray, bool]:
        """Result node per (tree, row), the slot ``len(lines)`` for no prediction; and whether
        every result is a scored node. Rows ending on a node without a score raise, as in
        JPMML."""
        nodes, at_leaves = self.frozen.walk(env)
        if at_leaves and self.leaves_scored:
            return nodes, True
        ended = nodes >= 0
        if not self.frozen.has_score.all():
            bad = ended & ~self.frozen.has_score[np.where(ended, nodes, 0)]
            if bad.any():
                line = self.lines[int(nodes[bad][0])]
                raise ModelRejected(
                    f"scoring ended in a Node without a score (line {line})", where=self.where
                )
        if ended.all():
            return nodes, True
        return np.where(ended, nodes, len(self.lines)), False

    def predict(self, env: Env) -> Prediction:
        (nodes,), _ = self.leaves(env)  # the one tree's row of results
        if self.function == "regression":
            return Prediction(env.n, value=self.values[nodes])
        return Prediction.from_probabilities(
            self.classes, self.probabilities[nodes], self.labels[nodes].copy()
        )


@register("TreeModel")
def compile_tree(element: Element, info: ModelInfo, context: Context) -> Core:
    missing, no_true = parse_strategies(element, where=context.where)
    split = element.get("splitCharacteristic", "multiSplit")
    if split not in ("binarySplit", "multiSplit"):
        raise unsupported(element, where=context.where, detail=f'splitCharacteristic="{split}"')
    root = element.find("Node")
    if root is None:
        raise missing_attribute(element, "Node", where=context.where)
    forest = Forest(missing, no_true)
    forest.add_tree(root, ScopeLookup(context, info, context.where))
    return TreeCore(forest, info.function, info.classes, context.where)
