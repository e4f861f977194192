"""The TensorFlow plugin on Lightbend's wine models (frozen graph and SavedModel) and small
models built here; references from TensorFlow 2.21 in ``wine/reference/``."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import ModelRejected, SchemaMismatch
from eventml.log import open_log
from eventml.models import formats
from eventml.models.formats._tensorflow import TensorflowModel
from eventml.models.registry import Registry, load_model, push_model
from tests.models.conformance import FormatConformance, assert_outputs_close

tf: Any = pytest.importorskip("tensorflow")

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
FROZEN = WINE / "models" / "optimized_WineQuality.pb"
SAVED = WINE / "models" / "wine_savedmodel"
WINE_FEATURES = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
)  # fmt: skip


def wine_matrix(n: int | None = None) -> np.ndarray:
    lines = (WINE / "winequality_red.csv").read_text().split("\n")[:n]
    return np.array([[float(v) for v in line.split(";")[:11]] for line in lines], np.float32)


def wine_rows(n: int | None = None) -> list[dict[str, ev.Feature]]:
    return [dict(zip(WINE_FEATURES, map(float, r), strict=True)) for r in wine_matrix(n)]


def tf_reference(name: str) -> tuple[np.ndarray, list[int]]:
    with (WINE / "reference" / f"tf-2.21_{name}.csv").open() as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(r[f"p{i}"]) for i in range(9)] for r in rows])
    return probs, [int(r["argmax"]) for r in rows]


def frozen_direct(x: np.ndarray) -> np.ndarray:
    """The frozen graph run the way the reference was made (``import_graph_def``)."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(FROZEN.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        out: np.ndarray = session.run("dense_3/Sigmoid:0", {"dense_1_input:0": x})
    return out


def saved_direct(x: np.ndarray) -> np.ndarray:
    """The SavedModel run the way the reference was made (``signatures["predict"]``)."""
    model = tf.saved_model.load(str(SAVED / "1"), tags=["serve"])
    out: np.ndarray = model.signatures["predict"](inputs=tf.constant(x))["outputs"].numpy()
    return out


def pushed_and_loaded(artefact: Path, features: tuple[str, ...] = WINE_FEATURES) -> Any:
    with open_log("memory://", Settings()) as log:
        push_model(log, artefact, "wine", features=features)
        return load_model(Registry.from_log(log).descriptor_with_payload(log, "wine", 1))


class TestTensorflowFrozenGraph(FormatConformance):
    format_name = "tensorflow"
    output = "dense_3/Sigmoid"

    @pytest.fixture
    def artefact(self) -> Path:
        return FROZEN

    @pytest.fixture
    def features(self) -> tuple[str, ...]:
        return WINE_FEATURES

    @pytest.fixture
    def rows(self) -> list[dict[str, ev.Feature]]:
        return wine_rows(40)

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        return [{self.output: p} for p in frozen_direct(wine_matrix(40)).tolist()]


class TestTensorflowSavedModel(TestTensorflowFrozenGraph):
    output = "outputs"

    @pytest.fixture
    def artefact(self) -> Path:
        return SAVED

    @pytest.fixture
    def expected(self) -> list[ev.Output]:
        return [{self.output: p} for p in saved_direct(wine_matrix(40)).tolist()]


@pytest.mark.parametrize(
    ("artefact", "reference", "output"),
    [
        (FROZEN, "optimized_WineQuality_outputs", "dense_3/Sigmoid"),
        (SAVED, "saved1_outputs", "outputs"),
    ],
    ids=["frozen", "savedmodel"],
)
def test_all_wine_rows_match_tensorflow_2_21(artefact: Path, reference: str, output: str) -> None:
    model = pushed_and_loaded(artefact)
    assert model.kind == "other"
    assert [(s.name, s.dtype, s.shape) for s in model.outputs] == [(output, "float32", [-1, 9])]
    got = model.predict_batch(wine_rows())
    want, argmax = tf_reference(reference)
    probs = np.array([g[output] for g in got])
    assert probs.shape == (1599, 9)
    assert np.abs(probs - want).max() < 1e-6
    assert probs.argmax(axis=1).tolist() == argmax
    model.close()


def test_the_savedmodel_readme_answer() -> None:
    # Lightbend's README: row 0 of the SavedModel predicts quality 5 with 0.689735.
    model = pushed_and_loaded(SAVED)
    (out,) = model.predict_batch(wine_rows(1))
    assert int(np.argmax(out["outputs"])) == 5
    assert out["outputs"][5] == pytest.approx(0.689735, abs=5e-7)


def test_the_highest_version_folder_is_packed(tmp_path: Path) -> None:
    base = tmp_path / "wine"
    shutil.copytree(SAVED / "1", base / "7")
    (base / "2").mkdir()
    (base / "notes").mkdir()
    plugin = formats.get("tensorflow")
    assert plugin.detect(base, b"")
    assert plugin.detect(base / "7", b"")
    assert not plugin.detect(base / "2", b"")
    assert plugin.pack(base) == plugin.pack(base / "7") == plugin.pack(SAVED / "1")


def test_wide_input_needs_feature_names() -> None:
    unknown = "expected feature names for input 'dense_1_input' of unknown shape (--features)"
    with (
        open_log("memory://", Settings()) as log,
        pytest.raises(ModelRejected, match=re.escape(unknown)),
    ):
        push_model(log, FROZEN, "wine")
    eleven = "expected 11 feature names for input 'inputs' (--features), got ['a', 'b']"
    with (
        open_log("memory://", Settings()) as log,
        pytest.raises(ModelRejected, match=re.escape(eleven)),
    ):
        push_model(log, SAVED, "wine", features=("a", "b"))


def test_a_saved_model_pb_file_alone_is_not_a_frozen_graph() -> None:
    path = SAVED / "1" / "saved_model.pb"
    assert not formats.get("tensorflow").detect(path, path.read_bytes()[:4096])


def graph_def_bytes(build: Any) -> bytes:
    graph = tf.Graph()
    with graph.as_default():
        build()
    data: bytes = graph.as_graph_def().SerializeToString()
    return data


def descriptor(features: tuple[str, ...] = ()) -> ev.ModelDescriptor:
    return ev.ModelDescriptor(
        name="m", version=1, digest="0", format="tensorflow", size=1, created_at=ev.now(),
        inputs=[ev.TensorSpec(name=f, dtype="double", shape=[-1]) for f in features],
    )  # fmt: skip


def test_a_graph_that_reads_files_is_refused() -> None:
    def build() -> None:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        secret = tf.strings.length(tf.io.read_file("/etc/hostname"))
        tf.identity(x + tf.cast(secret, tf.float32), name="y")

    with pytest.raises(ModelRejected, match=r"only computes, got ops \['ReadFile'\]"):
        formats.get("tensorflow").load(graph_def_bytes(build), descriptor())


def test_one_input_per_feature_and_a_single_column_is_regression() -> None:
    def build() -> None:
        a = tf.compat.v1.placeholder(tf.float64, [None], name="sepal_length")
        b = tf.compat.v1.placeholder(tf.float32, [None, 1], name="width")
        tf.identity(2.0 * a + tf.cast(tf.reshape(b, [-1]), tf.float64), name="score")

    model = formats.get("tensorflow").load(graph_def_bytes(build), descriptor())
    assert isinstance(model, TensorflowModel)
    assert (model.kind, model.feature_names) == ("regression", ("sepal_length", "width"))
    rows: list[dict[str, ev.Feature]] = [
        {"Sepal_Length": 1.5, "WIDTH": 0.25},
        {"sepal length": -1, "width": 3},
    ]
    assert_outputs_close(model.predict_batch(rows), [{"value": 3.25}, {"value": 1.0}], 0.0)
    with pytest.raises(SchemaMismatch, match="expected features \\['width'\\]"):
        model.predict_batch([{"sepal length": 1.0}])


def test_a_tf2_saved_model_with_serving_default(tmp_path: Path) -> None:
    class Doubler(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])  # type: ignore[untyped-decorator]
        def __call__(self, x: Any) -> Any:
            return {"twice": 2.0 * x, "sum": tf.reduce_sum(x, axis=1)}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "doubler"), signatures=module.__call__)
    model = pushed_and_loaded(tmp_path / "doubler", features=("p", "q"))
    assert model.kind == "other"
    assert [s.name for s in model.outputs] == ["sum", "twice"]
    assert model.predict_batch([{"p": 1.0, "q": 2.5}]) == [{"sum": 3.5, "twice": [2.0, 5.0]}]


def test_tensorflow_runs_on_one_thread_per_pool_when_eventml_starts_it() -> None:
    # In this process TensorFlow already started (the references above), so use a fresh one.
    script = f"""
from pathlib import Path
from eventml import events as ev
from eventml.models import formats
names = [str(i) for i in range(11)]
d = ev.ModelDescriptor(
    name="m", version=1, digest="0", format="tensorflow", size=1, created_at=ev.now(),
    inputs=[ev.TensorSpec(name=n, dtype="double") for n in names],
)
model = formats.get("tensorflow").load(Path({str(FROZEN)!r}).read_bytes(), d)
model.predict_batch([dict.fromkeys(names, 0.0)])
import tensorflow as tf
t = tf.config.threading
print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())
"""
    env = {**os.environ, "EVENTML_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["1", "1"]
