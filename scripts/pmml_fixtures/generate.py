"""Dev-only: build the sklearn2pmml fixtures under tests/fixtures/pmml/ (never run by CI).

Run from a throw-away venv with scikit-learn, sklearn2pmml and pandas (sklearn2pmml needs Java),
after resolving JPMML-Evaluator with Maven (see README.md beside this file)::

    /tmp/pmmlgen/bin/python scripts/pmml_fixtures/generate.py

For every model it writes ``<name>.pmml``, ``sklearn_<name>.csv`` (the fitted sklearn model's own
predict / predict_proba) and ``reference/jpmml-1.7.7_<name>.csv`` (JpmmlRunner.java).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
)
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn2pmml import sklearn2pmml
from sklearn2pmml.decoration import CategoricalDomain, ContinuousDomain
from sklearn2pmml.pipeline import PMMLPipeline
from sklearn2pmml.preprocessing import CutTransformer

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("PMML_FIXTURES_OUT", ROOT / "tests" / "fixtures" / "pmml"))
WINE = Path("/work/shared/data/wine/winequality_red.csv")
CLASSPATH = Path(os.environ.get("JPMML_CLASSPATH_FILE", "/tmp/jpmml.cp"))  # noqa: S108 (dev tool)
FEATURES = [
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
]  # fmt: skip
N_ROWS = 300  # rows kept as test inputs (fixtures stay small)
COMPRESSED = frozenset(
    {"forest50", "gbc_multiclass", "hgb_binary", "lgbm_multiclass"}
)  # stored as .pmml.gz


def wine() -> pd.DataFrame:
    frame = pd.read_csv(WINE, sep=";", header=None, names=[*FEATURES, "quality"])
    return frame


def jpmml(name: str, inputs: Path) -> None:
    runner = Path(__file__).with_name("JpmmlRunner.java")
    cp = CLASSPATH.read_text().strip()
    out = subprocess.run(
        ["java", "-cp", cp, str(runner), str(OUT / f"{name}.pmml"), str(inputs)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (OUT / "reference" / f"jpmml-1.7.7_{name}.csv").write_text(out.stdout)


def save_sklearn(name: str, pipeline: PMMLPipeline, x: pd.DataFrame) -> None:
    lines = []
    pred = pipeline.predict(x)
    if hasattr(pipeline, "predict_proba"):
        proba = pipeline.predict_proba(x)
        classes = [str(c) for c in pipeline.classes_]
        lines.append(",".join(["row", "prediction", *[f"p({c})" for c in classes]]))
        for i, (label, row) in enumerate(zip(pred, proba, strict=True)):
            lines.append(",".join([str(i), str(label), *[repr(float(p)) for p in row]]))
    else:
        lines.append("row,prediction")
        lines.extend(f"{i},{float(v)!r}" for i, v in enumerate(pred))
    (OUT / f"sklearn_{name}.csv").write_text("\n".join(lines) + "\n")


def write_inputs(path: Path, x: pd.DataFrame) -> None:
    x.to_csv(path, index=False, na_rep="", float_format=lambda v: repr(float(v)))


def build(name: str, estimator: object, x: pd.DataFrame, y: pd.Series, inputs: Path) -> None:
    pipeline = PMMLPipeline([("model", estimator)])
    pipeline.fit(x, y)
    sklearn2pmml(pipeline, str(OUT / f"{name}.pmml"))
    save_sklearn(name, pipeline, pd.read_csv(inputs, keep_default_na=True))
    jpmml(name, inputs)
    print(name, (OUT / f"{name}.pmml").stat().st_size, file=sys.stderr)
    if name in COMPRESSED:
        plain = OUT / f"{name}.pmml"
        (OUT / f"{name}.pmml.gz").write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
        plain.unlink()


def transformations(data: pd.DataFrame, inputs: Path) -> None:
    rng = np.random.default_rng(7)
    frame = data[["alcohol", "sulphates", "volatile acidity", "free sulfur dioxide",
                  "total sulfur dioxide"]].copy()  # fmt: skip
    frame["region"] = rng.choice(["north", "south", "east", "west", "islands"], size=len(frame))
    frame.loc[rng.choice(len(frame), 40, replace=False), "alcohol"] = np.nan
    frame.loc[rng.choice(len(frame), 40, replace=False), "region"] = None
    y = (data["quality"] >= 6).astype(int)
    columns = ColumnTransformer([
        ("scaled", PMMLPipeline([
            ("domain", ContinuousDomain(missing_value_replacement=10.0)),
            ("scale", StandardScaler()),
        ]), ["alcohol", "sulphates"]),
        ("binned", PMMLPipeline([
            ("domain", ContinuousDomain()),
            # labels sort in bin order: sklearn2pmml 0.133 pairs OneHotEncoder's (sorted)
            # categories with the cut labels in bin order, so other labels mis-score in PMML
            ("cut", CutTransformer(bins=[0.0, 0.4, 0.6, 0.8, 2.0],
                                   labels=["1lo", "2mid", "3hi", "4vhi"])),
            ("onehot", OneHotEncoder()),
        ]), ["volatile acidity"]),
        ("climate", PMMLPipeline([
            ("domain", CategoricalDomain(missing_value_replacement="north")),
            ("onehot", OneHotEncoder()),
        ]), ["region"]),
    ])  # fmt: skip
    pipeline = PMMLPipeline([("columns", columns), ("model", LogisticRegression(max_iter=2000))])
    pipeline.fit(frame, y)
    sklearn2pmml(pipeline, str(OUT / "pipeline_transforms.pmml"))
    test = frame.iloc[:N_ROWS]
    write_inputs(inputs, test)
    save_sklearn("pipeline_transforms", pipeline, pd.read_csv(inputs, keep_default_na=True))
    jpmml("pipeline_transforms", inputs)


def main() -> None:
    (OUT / "reference").mkdir(parents=True, exist_ok=True)
    data = wine()
    only = set(sys.argv[1:])  # e.g. "pipeline lgbm_multiclass"; nothing = everything
    x, quality = data[FEATURES], data["quality"]
    inputs = OUT / "inputs_wine.csv"
    write_inputs(inputs, x.iloc[:N_ROWS])
    label = quality.astype(str)
    good = (quality >= 6).astype(int)
    models = {
        "tree_ties": DecisionTreeClassifier(max_depth=7, min_samples_leaf=2, random_state=0),
        "forest50": RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0),
        "gbc_multiclass": GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0),
        "hgb_binary": HistGradientBoostingClassifier(max_iter=20, max_depth=4, random_state=0),
        "logistic_multiclass": LogisticRegression(max_iter=5000),
        "linear": LinearRegression(),
        "poisson": PoissonRegressor(max_iter=1000),
        "gamma": GammaRegressor(max_iter=1000),
        "mlp_logistic": PMMLPipeline([
            ("scale", StandardScaler()),
            ("mlp", MLPClassifier((8,), activation="logistic", max_iter=300, random_state=0)),
        ]),
        "lgbm_multiclass": LGBMClassifier(n_estimators=12, num_leaves=8, random_state=0,
                                          verbose=-1),
        "mlp_tanh": PMMLPipeline([
            ("scale", StandardScaler()),
            ("mlp", MLPClassifier((6, 5), activation="tanh", max_iter=300, random_state=0)),
        ]),
    }  # fmt: skip
    targets = {"hgb_binary": good, "mlp_tanh": good, "linear": quality.astype(float),
               "poisson": quality.astype(float), "gamma": quality.astype(float)}  # fmt: skip
    for name, estimator in models.items():
        if not only or name in only:
            build(name, estimator, x, targets.get(name, label), inputs)
    if not only or "pipeline" in only:
        transformations(data, OUT / "inputs_pipeline.csv")


if __name__ == "__main__":
    main()
