"""Train a model on a view, export it to ONNX and push it as a new version (DESIGN §7).

Algorithms (scikit-learn, one thread via threadpoolctl):

- ``hgb``: ``HistGradientBoostingClassifier`` / ``Regressor`` (missing values native);
- ``logreg``: median imputer, standard scaler, ``LogisticRegression`` (classification);
- ``linear``: median imputer, standard scaler, ``LinearRegression`` (regression).

The model is fit on the view's ``train`` rows and measured on its ``validation`` rows (the
time split; see :mod:`eventml.learning.views`) by scoring the exported ONNX model itself,
so the metrics describe the bytes that will serve. The ONNX file takes float32 inputs
``[N, k]`` with metadata ``feature_names`` (JSON list) and, for classifiers, ``classes``
(JSON list of class labels as strings) and plain probability tensors (no ZipMap).

The pushed descriptor's lineage names the view hash, the parent version (the endpoint's
current champion when it has the same name) and ``eventml.__version__``; its metrics are
the held-out metrics.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import eventml
from eventml import events as ev
from eventml.errors import InputError, PluginError, expected_got
from eventml.learning.metrics import classification_metrics, regression_metrics
from eventml.learning.views import FEATURE_PREFIX, View
from eventml.log import Log
from eventml.models.registry import Pushed, Registry, parse_ref, push_model
from eventml.serving.spec import spec_of

Algo = Literal["hgb", "logreg", "linear"]
TargetType = Literal["classification", "regression"]
ALGOS: tuple[str, ...] = ("hgb", "logreg", "linear")


@dataclass
class Trained:
    """An exported model: ONNX bytes, its features, classes and held-out metrics."""

    onnx: bytes
    features: list[str]
    classes: list[str]
    target_type: TargetType
    metrics: dict[str, float]


@dataclass
class TrainResult:
    """What ``eventml train`` did."""

    pushed: Pushed
    trained: Trained
    view_hash: str
    parent_version: int | None


def guess_target_type(table: pa.Table) -> TargetType:
    """Classification unless every label is a number and there are more than 20 distinct values."""
    if table["label_value"].null_count:
        return "classification"
    distinct = len(pc.unique(table["label"]))
    return "regression" if distinct > 20 else "classification"


def _estimator(algo: str, target: TargetType, seed: int) -> Any:
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LinearRegression, LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise PluginError(
            "eventml train needs scikit-learn: pip install 'eventml[sklearn]'"
        ) from exc
    if algo == "hgb":
        if target == "classification":
            return HistGradientBoostingClassifier(random_state=seed)
        return HistGradientBoostingRegressor(random_state=seed)
    if algo == "logreg":
        if target != "classification":
            raise InputError(
                "expected --target-type classification for --algo logreg, got regression"
            )
        return make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000)
        )
    if algo == "linear":
        if target != "regression":
            raise InputError(
                "expected --target-type regression for --algo linear, got classification "
                "(use --algo logreg for a linear classifier)"
            )
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LinearRegression())
    raise InputError(expected_got("--algo hgb, logreg or linear", algo))


def _xy(table: pa.Table, features: Sequence[str], target: TargetType) -> tuple[Any, Any]:
    from eventml.learning.score import matrix

    x = matrix(table, [FEATURE_PREFIX + f for f in features]).astype(np.float32)
    if target == "classification":
        y = np.asarray(table["label"].to_pylist(), dtype=object).astype(str)
    else:
        if table["label_value"].null_count:
            raise InputError(
                "expected numeric labels for --target-type regression, got text labels"
            )
        y = np.asarray(table["label_value"].to_numpy(zero_copy_only=False), dtype=np.float64)
    return x, y


def _to_onnx(model: Any, features: list[str], classes: list[str]) -> bytes:
    try:
        import onnx
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as exc:
        raise PluginError("eventml train needs skl2onnx: pip install 'eventml[sklearn]'") from exc
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if classes else None
    # one feature: the input takes its name (the ONNX plugin reads a [N, 1] input by name)
    name = features[0] if len(features) == 1 else "input"
    onx = convert_sklearn(
        model, initial_types=[(name, FloatTensorType([None, len(features)]))], options=options
    )
    props = {"feature_names": json.dumps(features)}
    if classes:
        props["classes"] = json.dumps(classes)
    onnx.helper.set_model_props(onx, props)
    data: bytes = onx.SerializeToString()
    return data


def fit(
    view: View,
    algo: str = "hgb",
    target_type: TargetType | None = None,
    features: Sequence[str] | None = None,
    seed: int = 0,
) -> Trained:
    """Fit ``algo`` on the view's train rows; ONNX bytes and held-out metrics."""
    from threadpoolctl import threadpool_limits

    from eventml.learning.score import Scored

    feats = list(features) if features else list(view.features)
    unknown = [f for f in feats if f not in view.features]
    if unknown:
        raise InputError(f"expected features of the view {view.features}, got {unknown}")
    non_numeric = [
        f for f in feats if not pa.types.is_floating(view.table[FEATURE_PREFIX + f].type)
    ]
    if non_numeric:
        raise InputError(
            f"expected numeric features to train on, got text or mixed features {non_numeric}"
        )
    target = target_type or guess_target_type(view.table)
    train_rows, valid_rows = view.split("train"), view.split("validation")
    if train_rows.num_rows == 0:
        raise InputError("expected training rows in the view, got only validation rows")
    x, y = _xy(train_rows, feats, target)
    if target == "classification" and len(set(y.tolist())) < 2:
        raise InputError(
            f"expected at least two classes to train a classifier, got {sorted(set(y.tolist()))}"
        )
    estimator = _estimator(algo, target, seed)
    with threadpool_limits(limits=1):
        estimator.fit(x, y)
    classes = [str(c) for c in estimator.classes_] if target == "classification" else []
    payload = _to_onnx(estimator, feats, classes)
    metrics: dict[str, float] = {"rows_train": float(train_rows.num_rows)}
    if valid_rows.num_rows:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(payload, opts, providers=["CPUExecutionProvider"])
        xv, yv = _xy(valid_rows, feats, target)
        raw = session.run(None, {session.get_inputs()[0].name: xv})
        if target == "classification":
            scored = Scored(kind=target, classes=classes, proba=np.asarray(raw[1], np.float64))
            names = np.array(classes, dtype=object)
            predicted = names[np.argmax(scored.proba, axis=1)]  # type: ignore[arg-type]
            held = classification_metrics(yv, predicted, scored.positive(classes[-1]), classes[-1])
        else:
            held = regression_metrics(yv, np.asarray(raw[0]).reshape(-1))
        held["rows_validation"] = held.pop("rows")
        metrics.update({k: v for k, v in held.items() if np.isfinite(v)})
    return Trained(
        onnx=payload, features=feats, classes=classes, target_type=target, metrics=metrics
    )


def current_champion(log: Log, endpoint: str) -> str | None:
    """``NAME:VERSION`` answering for ``endpoint`` on its latest route, if any."""
    routes = Registry.from_log(log).routes.get(endpoint, [])
    return spec_of(routes[-1]).champion if routes else None


def train(
    log: Log,
    endpoint: str,
    view: View,
    name: str,
    *,
    algo: str = "hgb",
    target_type: TargetType | None = None,
    features: Sequence[str] | None = None,
    seed: int = 0,
    description: str = "",
) -> TrainResult:
    """Fit on ``view``, export ONNX, push as a new version of ``name`` with its lineage."""
    if algo not in ALGOS:
        raise InputError(expected_got("--algo hgb, logreg or linear", algo))
    trained = fit(view, algo, target_type, features, seed)
    champion = current_champion(log, endpoint)
    parent = None
    if champion:
        champ_name, champ_version = parse_ref(champion)
        parent = champ_version if champ_name == name else None
    lineage = ev.Lineage(view=view.hash, parent_version=parent, code_version=eventml.__version__)
    with tempfile.TemporaryDirectory(prefix="eventml-train-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        path.write_bytes(trained.onnx)
        pushed = push_model(
            log, path, name, format="onnx", endpoint=endpoint,
            description=description or f"{algo} {trained.target_type} trained on view {view.hash[:12]}",
            metrics=trained.metrics, lineage=lineage,
        )  # fmt: skip
    return TrainResult(pushed=pushed, trained=trained, view_hash=view.hash, parent_version=parent)
