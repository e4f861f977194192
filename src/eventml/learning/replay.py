"""Replay: score past prediction events with a candidate and compare it with what was served.

The rows are the endpoint's prediction events (``since <= ts < until`` on the record's
event time), each with its latest label if it has one (a view with ``labelled=False``);
the candidate scores the features exactly as the events hold them, in vectorized batches
(on a worker thread while the labels are joined, when it reads the fold's float columns).

Reported for the candidate and, as ``served_*``, for the answers on the events:

- classifiers: ``auc``, ``accuracy``, ``log_loss``, ``ece`` (calibration error; the
  calibration table per bin is in ``calibration``), on the positive class (the last class
  in sorted order);
- regressors: ``rmse``, ``mae``;
- ``agreement``: share of rows with a served answer where the candidate gives the same
  label (regressors: a value within ``tolerance``, default 0.5, of the served one);
- ``psi``: population stability index of the candidate's scores against the served ones;
- ``rows`` (events replayed), ``labelled``, ``compared``.

Quality metrics are computed on the *compared* rows: labelled rows that have a served
answer, so both sides are measured on the same rows (all labelled rows when nothing was
served). ``segments`` repeats the metrics per served model version and, with
``segment_by``, per quartile of a feature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventml.errors import InputError
from eventml.learning.metrics import calibration, classification_metrics, psi, regression_metrics
from eventml.learning.score import Scored, feature_columns, score, scores_columns
from eventml.learning.views import (
    FEATURE_PREFIX,
    SERVED_PROBA,
    PredictionFold,
    View,
    ViewSpec,
    replay_view,
)
from eventml.log import Log
from eventml.models.base import LoadedModel
from eventml.models.registry import Registry, load_model


@dataclass
class Replay:
    """A replay's figures; ``metrics`` is what ``promote --require`` reads."""

    candidate: str
    endpoint: str
    kind: str
    positive: str | None
    metrics: dict[str, float]
    calibration: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    segments: list[dict[str, Any]] = field(default_factory=list)
    candidate_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    served_scores: np.ndarray = field(default_factory=lambda: np.empty(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate, "endpoint": self.endpoint, "kind": self.kind,
            "positive": self.positive, "metrics": self.metrics, "calibration": self.calibration,
            "segments": self.segments,
        }  # fmt: skip


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _served_scores(table: pa.Table, kind: str, positive: str | None) -> np.ndarray:
    """What was served per row: the value, or the probability of ``positive`` (NaN if none).

    Read from the ``served_proba.CLASS`` columns of a replay view; a table from
    :func:`~eventml.learning.views.build_view` has only the ``output`` text to decode.
    """
    if kind == "regression":
        return _floats(table["served_value"])
    if SERVED_PROBA + str(positive) in table.column_names:
        return _floats(table[SERVED_PROBA + str(positive)])
    if "output" not in table.column_names:
        return np.full(table.num_rows, np.nan)  # a replay view: nothing served probabilities
    outputs = msgspec.json.decode("[" + ",".join(table["output"].to_pylist()) + "]")
    out = np.full(len(outputs), np.nan)
    for i, o in enumerate(outputs):
        if o and isinstance(o.get("probabilities"), dict) and positive in o["probabilities"]:
            out[i] = float(o["probabilities"][positive])
    return out


def _metrics(
    kind: str, y: Any, labels: Any, scores: Any, positive: str | None, prefix: str = ""
) -> dict[str, float]:
    if kind == "classification":
        m = classification_metrics(y, labels, scores, str(positive))
    else:
        m = regression_metrics(y, scores)
    m.pop("rows", None)
    return {prefix + k: v for k, v in m.items() if np.isfinite(v)}


def replay(
    log: Log,
    ref: str,
    endpoint: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    segment_by: str | None = None,
    tolerance: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> Replay:
    """Score the endpoint's past events with model ``ref`` (``NAME:VERSION``) and compare."""
    registry = Registry.from_log(log)
    d = registry.resolve(ref)
    name = f"{d.name}:{d.version}"
    spec = ViewSpec(endpoint=endpoint, since=since, until=until, labelled=False, validation=0)
    preds = PredictionFold(log, endpoint, keep=False)
    with ThreadPoolExecutor(2, thread_name_prefix="eventml-replay") as pool:
        kept = pool.submit(preds.keep)
        table, scored, served = _scored_view(
            log, spec, preds, lambda: registry.descriptor_with_payload(log, d.name, d.version),
            name, segment_by, progress, pool,
        )  # fmt: skip
        kept.result()
    return compare(
        scored, table, name, endpoint, segment_by=segment_by, tolerance=tolerance, served=served
    )


def _scored_view(
    log: Log,
    spec: ViewSpec,
    preds: PredictionFold,
    descriptor: Callable[[], Any],
    name: str,
    segment_by: str | None,
    progress: Callable[[int, int], None] | None,
    pool: ThreadPoolExecutor,
) -> tuple[pa.Table, Scored, _Served | None]:
    """The replay view's table, the candidate's answers for its rows and, if computed
    meanwhile, the served side of the comparison.

    Scoring is most of a replay and onnxruntime holds no lock while it computes, so when
    the view's rows are the fold's rows in the time window and the candidate reads the
    fold's float columns (:func:`scores_columns`: an ONNX model with one wide input, and
    every feature map of the endpoint all floats), it scores those rows on a worker
    thread while this one joins the labels (DuckDB held to one thread), builds the view
    and computes the served answers' figures; the answers are then put in view order.
    Each row is scored from the same feature values either way (the rows are batched in
    another order, so a model whose arithmetic depends on the batch may differ in the
    last bit). Errors come in the order they would without the worker.
    """
    rows = preds.window(spec) if preds.floats is not None else None
    view: View | None = None
    if rows is None or not len(rows):  # a view other filters narrow, or none to score
        view = replay_view(log, spec, preds=preds)  # its own errors come first
        _check_segment(segment_by, view.features)
    else:
        _check_segment(segment_by, preds.floats or [])
    model = load_model(descriptor())
    ahead: Future[Scored] | None = None
    try:
        if view is None and rows is not None and scores_columns(model):
            try:
                cols = feature_columns(model, preds.table, name)
            except InputError:
                cols = None  # said by the view's own scoring below, as without the worker
            if cols is not None:
                feats = preds.table.select(cols)
                feats = feats if len(rows) == feats.num_rows else feats.take(rows)
                n = len(rows)
                report = (lambda done: progress(done, n)) if progress else None
                ahead = pool.submit(score, model, feats, name, report)
        if view is None:  # the join on one core while onnxruntime scores on the other
            view = replay_view(log, spec, preds=preds, threads=1 if ahead is not None else None)
        if ahead is None or rows is None or view.positions is None:
            return view.table, _score_view(model, view, name, progress), None
        at = np.full(preds.table.num_rows, -1, dtype=np.int64)
        at[rows] = np.arange(len(rows))
        picked = at[view.positions.to_numpy()]
        if len(picked) != len(rows) or (picked < 0).any():
            raise AssertionError("unreachable: the view's rows are the fold's time window")
        served = _Served(view.table, model.kind, _positive(model.kind, model.classes), segment_by)
        return view.table, ahead.result().take(picked), served
    finally:
        if ahead is not None:
            wait([ahead])  # the model is closed only once it is done
        model.close()


def _positive(kind: str, classes: Sequence[str]) -> str | None:
    """The class whose probability the figures read: the last in sorted order."""
    return sorted(classes)[-1] if kind == "classification" and classes else None


def _check_segment(segment_by: str | None, features: list[str]) -> None:
    if segment_by is not None and segment_by not in features:
        raise InputError(
            f"expected --segment-by one of the features {features}, got {segment_by!r}"
        )


def _score_view(
    model: LoadedModel, view: View, name: str, progress: Callable[[int, int], None] | None
) -> Scored:
    n = view.rows
    return score(
        model,
        view.table,
        name,
        (lambda done: progress(done, n)) if progress else None,
        rows=view.feature_bytes,
    )


class _Served:
    """The side of a replay that needs only the view's table: what was served, the labels,
    the rows each figure is computed on, and the served answers' figures on them.

    Replay computes it while the candidate is still scoring; :func:`compare` adds the
    candidate's side. ``kind`` and ``positive`` are the candidate's (see :func:`compare`).
    """

    def __init__(
        self, table: pa.Table, kind: str, positive: str | None, segment_by: str | None
    ) -> None:
        self.kind, self.positive, self.segment_by = kind, positive, segment_by
        self.scores = _served_scores(table, kind, positive)
        self.labelled = ~np.asarray(
            table["label"].is_null().to_numpy(zero_copy_only=False), dtype=bool
        )
        self.has = ~np.isnan(self.scores)
        labelled, has = self.labelled, self.has
        self.compared = labelled & has if (labelled & has).any() else labelled
        self.y = (
            np.asarray(table["label"].to_numpy(zero_copy_only=False), dtype=object)
            if kind == "classification"
            else _floats(table["label_value"])
        )
        self.labels = np.asarray(table["served_label"].to_numpy(zero_copy_only=False), dtype=object)
        self.calibration: list[dict[str, float]] | None = None
        both = self.compared & has
        if kind == "classification" and both.any():
            self.calibration = calibration(self.y[both] == positive, self.scores[both])
        # (by, segment, its rows): per served version ("NAME:VERSION", "(none)" without a
        # model, as dictionary codes: one pass), then per quartile of ``segment_by``
        self.segments: list[tuple[str, str, np.ndarray]] = []
        version = pc.cast(table["version"], pa.string())
        served_by = pc.if_else(
            pc.is_null(table["model"]),
            "(none)",
            pc.binary_join_element_wise(
                table["model"], version, ":", null_handling="replace", null_replacement="None"
            ),
        ).combine_chunks()
        coded = pc.dictionary_encode(served_by)
        codes = np.asarray(coded.indices.to_numpy(zero_copy_only=False))
        names = coded.dictionary.to_pylist()
        for code in sorted(range(len(names)), key=names.__getitem__):
            self.segments.append(("served", names[code], codes == code))
        if segment_by is not None:
            x = np.asarray(
                table[FEATURE_PREFIX + segment_by].to_numpy(zero_copy_only=False), np.float64
            )
            edges = (
                np.unique(np.nanquantile(x, [0.25, 0.5, 0.75]))
                if np.isfinite(x).any()
                else np.empty(0)
            )
            bins = np.searchsorted(edges, x, side="right")
            bounds = [-np.inf, *edges.tolist(), np.inf]
            for b in range(len(edges) + 1):
                inside = (bins == b) & np.isfinite(x)
                self.segments.append((segment_by, f"[{bounds[b]:g}, {bounds[b + 1]:g})", inside))
        # the rows of each figure (compared, then each segment's labelled rows), each
        # distinct set once: a segment often holds exactly the compared rows
        self.masks: list[np.ndarray] = []
        self.mask_of: list[int] = []
        for mask in [self.compared, *(rows & labelled for _, _, rows in self.segments)]:
            same = [j for j, m in enumerate(self.masks) if np.array_equal(m, mask)]
            self.mask_of.append(same[0] if same else len(self.masks))
            if not same:
                self.masks.append(mask)
        self.figures = [self._figures(mask) for mask in self.masks]

    def _figures(self, mask: np.ndarray) -> dict[str, float]:
        """The served answers' ``served_*`` figures on the rows of ``mask`` that have one."""
        both = mask & self.has
        if not both.any():
            return {}
        return _metrics(
            self.kind, self.y[both], self.labels[both], self.scores[both], self.positive, "served_"
        )


def compare(
    scored: Scored,
    table: pa.Table,
    candidate: str,
    endpoint: str,
    *,
    segment_by: str | None = None,
    tolerance: float = 0.5,
    served: _Served | None = None,
) -> Replay:
    """The replay figures for a candidate's answers on a view table (see the module docstring).

    ``served``: the table's side, if computed already for this candidate's kind and class.
    """
    kind = scored.kind
    positive = _positive(kind, scored.classes)
    if served is None or (served.kind, served.positive, served.segment_by) != (
        kind,
        positive,
        segment_by,
    ):
        served = _Served(table, kind, positive, segment_by)
    cand = scored.positive(positive) if positive is not None else np.asarray(scored.values)
    labelled, has_served, compared, y_all = served.labelled, served.has, served.compared, served.y
    cand_labels = scored.labels if scored.labels is not None else cand
    # each figure set: the candidate's, then the served answers' on the same rows
    blocks = [
        {**_metrics(kind, y_all[mask], cand_labels[mask], cand[mask], positive), **figures}
        for mask, figures in zip(served.masks, served.figures, strict=True)
    ]
    metrics = dict(blocks[served.mask_of[0]])
    metrics.update(
        {
            "rows": float(len(cand)),
            "labelled": float(labelled.sum()),
            "compared": float(compared.sum()),
        }
    )
    if has_served.any():
        if kind == "classification":
            agree = cand_labels[has_served] == served.labels[has_served]
        else:
            agree = np.abs(cand[has_served] - served.scores[has_served]) <= tolerance
        metrics["agreement"] = float(np.mean(agree))
        metrics["psi"] = psi(served.scores[has_served], cand[has_served])
    calib: dict[str, list[dict[str, float]]] = {}
    if kind == "classification" and compared.any():
        calib["candidate"] = calibration(y_all[compared] == positive, cand[compared])
        if served.calibration is not None:
            calib["served"] = served.calibration
    segments: list[dict[str, Any]] = []
    for (by, segment, rows), j in zip(served.segments, served.mask_of[1:], strict=True):
        segments.append({"by": by, "segment": segment, "rows": int(rows.sum()),
                         "labelled": int(served.masks[j].sum()), **blocks[j]})  # fmt: skip
    return Replay(
        candidate=candidate, endpoint=endpoint, kind=kind, positive=positive, metrics=metrics,
        calibration=calib, segments=segments,
        candidate_scores=cand[has_served] if has_served.any() else cand,
        served_scores=served.scores[has_served],
    )  # fmt: skip
