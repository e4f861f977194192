"""MiningModel segmentation: sum, weightedSum, average, weightedAverage, median, majorityVote,
weightedMajorityVote, selectFirst and modelChain (``max`` for regression is refused, as JPMML
refuses it).

Plain TreeModel segments (predicate ``True``, no transformations, Output or Targets of their
own) are flattened into one forest and walked together. Ties between classes go to the class
JPMML meets first: JPMML aggregates into insertion-ordered maps, so the winner among equal scores
is the class that appears first (segment by segment, in each segment's own class order).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from eventml import _kernels
from eventml.errors import ModelRejected, SchemaMismatch

from ._base import (
    MODEL_TAGS,
    Context,
    Core,
    Model,
    ModelInfo,
    Prediction,
    compile_model,
    evaluate_outputs,
    register,
)
from ._fields import Env, FieldInfo, parse_mining_schema
from ._predicates import PREDICATE_TAGS, Constant, Predicate, find_predicate
from ._tree import Forest, ScopeLookup, TreeCore, parse_strategies
from ._values import BoolArray, Column, FloatArray, constant_column
from ._xml import Element, missing_attribute, unsupported

REGRESSION_METHODS = frozenset(
    {
        "sum",
        "weightedSum",
        "average",
        "weightedAverage",
        "median",
        "selectFirst",
        "modelChain",
    }
)
CLASSIFICATION_METHODS = frozenset(
    {
        "average",
        "weightedAverage",
        "majorityVote",
        "weightedMajorityVote",
        "selectFirst",
        "modelChain",
    }
)
PLAIN_TREE_CHILDREN = frozenset(
    {"MiningSchema", "Node", "Extension", "ModelStats", "ModelExplanation"}
)


@dataclass
class Segment:
    predicate: Predicate
    weight: float
    model: Model | None  # None: the segment is tree ``tree`` of the shared forest
    tree: int = -1


@dataclass
class Results:
    """Per-segment results: fired rows, values or probabilities, and class ranks for ties."""

    fired: BoolArray  # [S, n]
    values: FloatArray | None = None  # [S, n]
    probs: FloatArray | None = None  # [S, n, k]
    labels: npt.NDArray[np.int64] | None = None  # [S, n], -1 = missing
    ranks: Callable[[npt.NDArray[np.int64]], FloatArray] | None = None
    """For some rows, [S, rows, k]: the position of each class in each segment's own list."""
    # When every segment is a tree of the forest, probs is node_probs[leaves], gathered only
    # where read; so are the labels when every tree ended on a scored node (none missing).
    leaves: npt.NDArray[np.int64] | None = None  # [S, n]
    node_probs: FloatArray | None = None  # [nodes, k]
    node_labels: npt.NDArray[np.int64] | None = None  # [nodes]

    def segment_labels(self) -> npt.NDArray[np.int64]:
        """``labels``, gathered from the leaves when it was never built."""
        if self.labels is not None:
            return self.labels
        assert self.leaves is not None
        assert self.node_labels is not None
        return np.take(self.node_labels, self.leaves, mode="clip")

    def segment_probs(self, rows: Any = slice(None)) -> FloatArray:
        """``probs[:, rows]``, gathered from the leaves when probs was never built."""
        if self.probs is not None:
            return self.probs[:, rows]
        assert self.leaves is not None
        assert self.node_probs is not None
        return np.take(self.node_probs, self.leaves[:, rows], axis=0, mode="clip")

    def summed(self, weights: FloatArray | None) -> FloatArray:
        """Per row, the sum over segments of ``weights[s] * probs[s]`` (every row counted),
        from the leaves in one compiled pass when probs was never built. numpy adds the
        segments in order (what the pass does) unless there is one row of one class: then
        it sums pairwise, and so does this."""
        leaves, table = self.leaves, self.node_probs
        if leaves is None or table is None or table.shape[1] * min(leaves.shape[1], 2) < 2:
            p = self.segment_probs()
            return np.asarray(
                p.sum(axis=0) if weights is None else (weights[:, None, None] * p).sum(axis=0)
            )
        out = np.empty((leaves.shape[1], table.shape[1]))
        w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
        _kernels.sum_rows(table, table.shape[1], leaves, w, out)
        return out


class MiningCore(Core):
    def __init__(self, element: Element, info: ModelInfo, context: Context) -> None:
        where = context.where
        self.where = where
        self.function = info.function
        segmentation = element.find("Segmentation")
        if segmentation is None:
            raise missing_attribute(element, "Segmentation", where=where)
        self.method = segmentation.get("multipleModelMethod", "")
        allowed = REGRESSION_METHODS if self.function == "regression" else CLASSIFICATION_METHODS
        if self.method not in allowed:
            raise unsupported(
                segmentation, where=where, detail=f'multipleModelMethod="{self.method}"'
            )
        self.treatment = segmentation.get("missingPredictionTreatment", "returnMissing")
        if self.treatment not in ("returnMissing", "skipSegment"):
            raise unsupported(
                segmentation, where=where, detail=f'missingPredictionTreatment="{self.treatment}"'
            )
        if segmentation.get("missingThreshold") not in (None, "1", "1.0"):
            raise unsupported(segmentation, where=where, detail="missingThreshold")
        self.forest: Forest | None = None
        self.segments: list[Segment] = []
        chain_scope = info.scope
        for child in segmentation.elements():
            if child.tag != "Segment":
                raise unsupported(child, where=where)
        for item in segmentation.findall("Segment"):
            for child in item.elements():
                if child.tag not in PREDICATE_TAGS and child.tag not in MODEL_TAGS:
                    raise unsupported(child, where=where)
            predicate = find_predicate(item, chain_scope, where=where)
            weight = float(item.get("weight", "1") or "1")
            model_element = next((c for c in item.elements() if c.tag in MODEL_TAGS), None)
            if model_element is None:
                raise missing_attribute(item, "a model", where=where)
            if self._batchable(model_element, predicate, info, context):
                tree = self._add_tree(model_element, info, context)
                self.segments.append(Segment(predicate, weight, None, tree))
                continue
            segment_context = Context(context.data_fields, chain_scope, where, True)
            model = compile_model(model_element, segment_context)
            if self.method == "modelChain":
                for output in model.outputs:  # later segments see this segment's outputs
                    chain_scope.fields[output.name] = FieldInfo(output.data_type, "continuous")
            self.segments.append(Segment(predicate, weight, model))
        if not self.segments:
            raise missing_attribute(segmentation, "Segment", where=where)
        self.forest_segments = [s for s in self.segments if s.model is None]
        self.tree_core = (
            TreeCore(self.forest, self.function, info.classes, where)
            if self.forest is not None
            else None
        )
        self._classes(info)

    def _batchable(
        self, model: Element, predicate: Predicate, info: ModelInfo, context: Context
    ) -> bool:
        if model.tag != "TreeModel" or self.method in ("modelChain", "selectFirst"):
            return False
        if not (isinstance(predicate, Constant) and predicate.value):
            return False
        if model.get("functionName") != self.function:
            return False
        if any(child.tag not in PLAIN_TREE_CHILDREN for child in model.children):
            return False
        strategies = parse_strategies(model, where=context.where)
        if self.forest is not None and strategies != (
            self.forest.missing_strategy,
            self.forest.no_true_child,
        ):
            return False
        schema = model.find("MiningSchema")
        if schema is None:
            return False

        def types(name: str, at: Element) -> str:
            return info.scope.lookup(name, at, where=context.where).data_type

        mining = parse_mining_schema(schema, types, where=context.where)
        return all(spec.plain for spec in mining)

    def _add_tree(self, model: Element, info: ModelInfo, context: Context) -> int:
        """Add a TreeModel to the shared forest; returns its index there."""
        missing, no_true = parse_strategies(model, where=context.where)
        split = model.get("splitCharacteristic", "multiSplit")
        if split not in ("binarySplit", "multiSplit"):
            raise unsupported(model, where=context.where, detail=f'splitCharacteristic="{split}"')
        if self.forest is None:
            self.forest = Forest(missing, no_true)
        root = model.find("Node")
        if root is None:
            raise missing_attribute(model, "Node", where=context.where)
        self.forest.add_tree(root, ScopeLookup(context, info, context.where))
        return len(self.forest.roots) - 1

    def _classes(self, info: ModelInfo) -> None:
        if self.function == "regression":
            self.classes: tuple[str, ...] = ()
            return
        seen = list(info.classes)
        cores = [s.model.classes for s in self.segments if s.model is not None]
        if self.tree_core is not None:
            cores.append(self.tree_core.classes)
        for classes in cores:
            for label in classes:
                if label not in seen:
                    seen.append(label)
        self.classes = tuple(seen)
        if self.tree_core is not None and self.forest is not None:
            k = len(self.classes)
            tree_classes = self.tree_core.classes
            remap = [self.classes.index(c) for c in tree_classes]
            n_nodes = len(self.forest.scores) + 1
            self.node_probs = np.zeros((n_nodes, k))
            self.node_probs[:, remap] = self.tree_core.probabilities
            self.node_probs[-1] = np.nan  # the "no prediction" slot
            self.node_ranks = np.full((n_nodes, k), np.inf)
            self.node_labels = np.full(n_nodes, -1, dtype=np.int64)
            for i, (score, dist) in enumerate(
                zip(self.forest.scores, self.forest.distributions, strict=True)
            ):
                order = list(dist) if dist is not None else [score] if score is not None else []
                for rank, label in enumerate(order):
                    self.node_ranks[i, self.classes.index(label)] = rank
                if score is not None:
                    self.node_labels[i] = self.classes.index(score)

    # ---- evaluation -------------------------------------------------------------------------

    def predict(self, env: Env) -> Prediction:
        if self.method == "modelChain":
            return self._chain(env)
        results = self._results(env)
        if self.method == "selectFirst":
            return self._select_first(env, results)
        if self.function == "regression":
            return Prediction(env.n, value=self._regression(results))
        return self._classification(env, results)

    def _chain(self, env: Env) -> Prediction:
        """Segments in order; each one's Output fields become fields of the later ones."""
        last: Prediction | None = None
        for segment in self.segments:
            fired = segment.predicate.evaluate(env).true
            assert segment.model is not None  # chains never batch trees
            index = np.flatnonzero(fired)
            part_env = env if fired.all() else env.take(index)
            prediction, segment_env = segment.model.evaluate(part_env)
            outputs = evaluate_outputs(segment.model.outputs, prediction, segment_env)
            for name, column in outputs.items():
                env.values[name] = column if fired.all() else _spread(column, index, env.n)
            last = prediction if fired.all() else _spread_prediction(prediction, index, env.n)
        assert last is not None
        return _align(last, self.classes, self.where) if self.function == "classification" else last

    def _results(self, env: Env) -> Results:
        n, count, k = env.n, len(self.segments), len(self.classes)
        fired = np.stack([segment.predicate.evaluate(env).true for segment in self.segments])
        classify = self.function == "classification"
        values = None if classify else np.full((count, n), np.nan)
        all_trees = len(self.forest_segments) == count
        probs = np.full((count, n, k), np.nan) if classify and not all_trees else None
        leaves = None
        labels = np.full((count, n), -1, dtype=np.int64) if classify and not all_trees else None
        static_ranks = np.full((count, k), np.inf)
        trees = [s for s, segment in enumerate(self.segments) if segment.model is None]
        nodes = None
        if self.tree_core is not None and self.forest is not None:
            nodes, scored = self.tree_core.leaves(env)
            tree_index = [self.segments[s].tree for s in trees]
            leaf = nodes if tree_index == list(range(len(nodes))) else nodes[tree_index]
            if values is not None:
                values[trees] = np.take(self.tree_core.values, leaf, mode="clip")
            elif probs is None:  # every segment is a tree of the forest: gathered when read
                leaves = np.ascontiguousarray(leaf, dtype=np.int64)
                if not scored:  # some rows have no prediction: -1 labels, read now
                    labels = np.take(self.node_labels, leaf, mode="clip")
            else:
                assert labels is not None
                probs[trees] = self.node_probs[leaf]
                labels[trees] = np.take(self.node_labels, leaf, mode="clip")
        for s, segment in enumerate(self.segments):
            if segment.model is None:
                continue
            prediction = self._evaluate_fired(segment.model, env, fired[s])
            if values is not None:
                values[s] = prediction.value if prediction.value is not None else np.nan
                continue
            assert probs is not None  # a segment that is not a tree: probs was built
            assert labels is not None
            aligned = _align(prediction, self.classes, self.where)
            probs[s] = aligned.probabilities
            for rank, label in enumerate(prediction.classes):
                static_ranks[s, self.classes.index(label)] = rank
            index = {c: i for i, c in enumerate(self.classes)}
            found = aligned.labels if aligned.labels is not None else np.full(n, None)
            labels[s] = [-1 if label is None else index.get(str(label), -1) for label in found]

        def ranks(rows: npt.NDArray[np.int64]) -> FloatArray:
            out = np.repeat(static_ranks[:, None, :], len(rows), axis=1)
            if nodes is not None and trees:
                out[trees] = self.node_ranks[nodes[[self.segments[s].tree for s in trees]][:, rows]]
            return out

        return Results(
            fired, values, probs, labels, ranks if classify else None, leaves,
            self.node_probs if leaves is not None else None,
            self.node_labels if leaves is not None else None,
        )  # fmt: skip

    @staticmethod
    def _evaluate_fired(model: Model, env: Env, fired: BoolArray) -> Prediction:
        """Score a segment on the rows its predicate selects only (others stay missing), so a
        row the segment would refuse does not fail the batch unless the segment applies."""
        if fired.all():
            return model.evaluate(env)[0]
        index = np.flatnonzero(fired)
        return _spread_prediction(model.evaluate(env.take(index))[0], index, env.n)

    def _missing(self, results: Results) -> tuple[BoolArray, BoolArray]:
        """(rows whose result is missing, segments that count) after missingPredictionTreatment."""
        if results.values is not None:
            seg_missing = np.isnan(results.values)
        elif results.labels is None:  # unbuilt: every tree ended on a scored node
            return np.asarray(~results.fired.any(axis=0)), results.fired
        else:
            seg_missing = results.labels < 0
        bad = results.fired & seg_missing
        counted = results.fired & ~seg_missing
        if self.treatment == "returnMissing":
            row_missing = bad.any(axis=0)
        else:
            row_missing = np.zeros(results.fired.shape[1], dtype=bool)
        return np.asarray(row_missing | ~counted.any(axis=0)), np.asarray(counted)

    def _regression(self, results: Results) -> FloatArray:
        assert results.values is not None
        row_missing, counted = self._missing(results)
        weights = np.array([s.weight for s in self.segments])[:, None] * counted
        v = np.where(counted, results.values, 0.0)
        if self.method == "sum":
            out = v.sum(axis=0)
        elif self.method == "weightedSum":
            out = (weights * v).sum(axis=0)
        elif self.method == "average":
            out = v.sum(axis=0) / np.maximum(counted.sum(axis=0), 1)
        elif self.method == "weightedAverage":
            out = (weights * v).sum(axis=0) / np.where(
                weights.sum(axis=0) == 0, 1, weights.sum(axis=0)
            )
        else:  # median
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # rows without any segment
                out = np.nanmedian(np.where(counted, results.values, np.nan), axis=0)
        return np.asarray(np.where(row_missing, np.nan, out))

    def _classification(self, env: Env, results: Results) -> Prediction:
        if self.method in ("majorityVote", "weightedMajorityVote"):
            return self._vote(env, results)
        row_missing, counted = self._missing(results)
        count, n = counted.shape
        k = len(self.classes)
        segment_weights = np.array([s.weight for s in self.segments])
        weighted = self.method == "weightedAverage"
        if counted.all():  # the same divisor for every row, summed in the same order
            total = results.summed(segment_weights if weighted else None)
            divisor = 0.0 if weighted else float(count)
            for w in segment_weights.tolist() if weighted else ():
                divisor += w
            probs = total / (divisor or 1.0)
        else:
            weights = segment_weights[:, None] * counted
            p = np.where(counted[:, :, None], results.segment_probs(), 0.0)
            if weighted:
                total = (weights[:, :, None] * p).sum(axis=0)
                probs = total / np.where(weights.sum(axis=0) == 0, 1, weights.sum(axis=0))[:, None]
            else:
                probs = p.sum(axis=0) / np.maximum(counted.sum(axis=0), 1)[:, None]
        scores = probs
        best = scores.max(axis=1, keepdims=True)
        winner = np.argmax(scores, axis=1)
        tied = np.flatnonzero((scores == best).sum(axis=1) > 1)
        if tied.size:
            assert results.ranks is not None
            present = counted[:, tied, None] & ~np.isnan(results.segment_probs(tied))
            seen = np.where(present, results.ranks(tied), np.inf)
            seen = seen + np.arange(count)[:, None, None] * (k + 1)
            first_tied = seen.min(axis=0)
            candidates = scores[tied] == best[tied]
            winner[tied] = np.argmin(np.where(candidates, first_tied, np.inf), axis=1)
        labels = np.array(self.classes, dtype=object)[winner]
        labels[row_missing] = None
        probs[row_missing] = np.nan
        return Prediction(n, None, self.classes, probs, labels)

    def _vote(self, env: Env, results: Results) -> Prediction:
        """Majority votes the way JPMML counts them.

        A segment without a prediction votes for "no class": the row's result is missing when
        those votes outweigh every class, and JPMML refuses the record when no segment has a
        prediction. Probabilities are each class's share of the votes that name a class.
        """
        labels = results.segment_labels()
        fired = results.fired
        count, n = fired.shape
        weights = np.array([s.weight for s in self.segments])[:, None] * np.ones((1, n))
        if self.method == "majorityVote":
            weights = np.ones((count, n))
        scores = np.zeros((n, len(self.classes)))
        first = np.full((n, len(self.classes)), np.inf)
        absent = np.zeros(n)
        for s in range(count):
            named = fired[s] & (labels[s] >= 0)
            rows = np.flatnonzero(named)
            cls = labels[s][named]
            np.add.at(scores, (rows, cls), weights[s][named])
            first[rows, cls] = np.minimum(first[rows, cls], s)
            absent += np.where(fired[s] & (labels[s] < 0), weights[s], 0.0)
        total = scores.sum(axis=1)
        empty = total == 0  # no segment named a class: JPMML's "Empty classification"
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise SchemaMismatch(
                f"no segment of the {self.method} has a prediction (row {row})",
                where=self.where,
                row=row,
            )
        best = scores.max(axis=1, keepdims=True)
        candidates = scores == best
        winner = np.argmin(np.where(candidates, first, np.inf), axis=1)
        probs = scores / total[:, None]
        labels = np.array(self.classes, dtype=object)[winner]
        missing = absent > best[:, 0]
        labels[missing] = None
        probs[missing] = np.nan
        return Prediction(n, None, self.classes, probs, labels)

    def _select_first(self, env: Env, results: Results) -> Prediction:
        n = env.n
        chosen = np.argmax(results.fired, axis=0)
        none = ~results.fired.any(axis=0)
        rows = np.arange(n)
        if results.values is not None:
            return Prediction(n, value=np.where(none, np.nan, results.values[chosen, rows]))
        probs = results.segment_probs()[chosen, rows]
        probs[none] = np.nan
        index = results.segment_labels()[chosen, rows]
        labels = np.array([*self.classes, None], dtype=object)[
            np.where(none | (index < 0), -1, index)
        ]
        return Prediction(n, None, self.classes, probs, labels)


def _spread(column: Column, index: npt.NDArray[np.int64], n: int) -> Column:
    """A column computed for rows ``index`` of a batch of ``n``; other rows are missing."""
    out = constant_column(None, column.data_type, n)
    out.values[index] = column.values
    return out


def _spread_prediction(prediction: Prediction, index: npt.NDArray[np.int64], n: int) -> Prediction:
    """A prediction for rows ``index`` of a batch of ``n``; other rows have none."""
    out = Prediction(n, None, prediction.classes)
    if prediction.value is not None:
        out.value = np.full(n, np.nan)
        out.value[index] = prediction.value
    if prediction.probabilities is not None:
        out.probabilities = np.full((n, prediction.probabilities.shape[1]), np.nan)
        out.probabilities[index] = prediction.probabilities
    if prediction.labels is not None:
        out.labels = np.full(n, None, dtype=object)
        out.labels[index] = prediction.labels
    return out


def _align(prediction: Prediction, classes: tuple[str, ...], where: str = "") -> Prediction:
    """Re-express a classification result over ``classes`` (absent classes get 0.0)."""
    if prediction.classes == classes or prediction.probabilities is None:
        return prediction
    out = np.zeros((prediction.n, len(classes)))
    for j, label in enumerate(prediction.classes):
        if label not in classes:
            raise ModelRejected(f"segment class {label!r} is not a class of the model", where=where)
        out[:, classes.index(label)] = prediction.probabilities[:, j]
    out[np.isnan(prediction.probabilities).any(axis=1)] = np.nan
    return Prediction(prediction.n, None, classes, out, prediction.labels)


@register("MiningModel")
def compile_mining(element: Element, info: ModelInfo, context: Context) -> Core:
    return MiningCore(element, info, context)
