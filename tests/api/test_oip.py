"""tritonclient, unchanged, against eventml: an ONNX classifier and a PMML regression, binary on and off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
import tritonclient.http as triton  # type: ignore[import-untyped, unused-ignore]
from tritonclient.utils import (  # type: ignore[import-untyped, unused-ignore]
    InferenceServerException,
)

from eventml import events as ev
from eventml.demo import FEATURES
from eventml.log import Log
from eventml.models.registry import Registry, load_model, push_model
from eventml.serving.routes import deploy
from tests.api.conftest import WINE_LR, WINE_NAMES, Server, churn_rows, train_churn_onnx, wine_rows


@pytest.fixture
def server(make_server: Callable[..., Server], tmp_path: Path) -> Server:
    onnx = tmp_path / "churn.onnx"
    train_churn_onnx(onnx)

    def setup(log: Log) -> None:
        push_model(log, onnx, "churn")
        deploy(log, "churn", "churn")
        push_model(log, WINE_LR, "wine-lr", endpoint="wine")
        deploy(log, "wine", "wine-lr")

    return make_server(setup)


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def direct(server: Server, ref: str, rows: list[dict[str, float]]) -> list[ev.Output]:
    registry = Registry.from_log(server.log)
    d = registry.resolve(ref)
    model = load_model(registry.descriptor_with_payload(server.log, d.name, d.version))
    try:
        return list(model.predict_batch(rows))
    finally:
        model.close()


def predictions(server: Server) -> list[ev.Prediction]:
    return [
        p
        for batch in server.log.read_all("predictions")
        for p in ev.decode_many(batch.values, ev.Prediction)
    ]


def test_health_and_metadata_as_tritonclient_expects(server: Server) -> None:
    c = client(server)
    h = server.headers("read")
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.get_server_metadata(headers=h) == {
        "name": "eventml",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "model_repository", "statistics"],
    }
    assert c.is_model_ready("churn", headers=h)
    assert c.is_model_ready("wine-lr", "1", headers=h)
    assert not c.is_model_ready("nothing", headers=h)
    meta = c.get_model_metadata("wine", headers=h)
    assert meta == {
        "name": "wine",
        "versions": [],
        "platform": "eventml_pmml",
        "inputs": [
            {"name": n, "datatype": "FP64", "shape": [-1]}
            for n in (
                "fixed acidity",
                "volatile acidity",
                "chlorides",
                "total sulfur dioxide",
                "sulphates",
                "alcohol",
            )
        ],
        "outputs": [{"name": "value", "datatype": "FP64", "shape": [-1]}],
    }
    churn = c.get_model_metadata("churn", "1", headers=h)
    assert churn["versions"] == ["1"]
    assert churn["platform"] == "eventml_onnx"
    assert [i["name"] for i in churn["inputs"]] == list(FEATURES)
    assert churn["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    with pytest.raises(InferenceServerException, match="expected a valid token"):
        c.get_model_metadata("churn", headers={"Authorization": "Bearer eml_x_y"})


@pytest.mark.parametrize("binary", [True, False])
def test_pmml_regression_per_feature_tensors(server: Server, binary: bool) -> None:
    rows = wine_rows(7)
    inputs = []
    for name in WINE_NAMES:
        t = triton.InferInput(name, [7], "FP64")
        t.set_data_from_numpy(np.array([r[name] for r in rows]), binary_data=binary)
        inputs.append(t)
    outputs = [triton.InferRequestedOutput("value", binary_data=binary)]
    result = client(server).infer(
        "wine", inputs, outputs=outputs, headers=server.headers("predict")
    )
    expected = [o["value"] for o in direct(server, "wine-lr:1", rows)]
    got = result.as_numpy("value")
    assert got.dtype == np.float64
    assert got.shape == (7,)
    assert got.tolist() == expected
    resp = result.get_response()
    assert resp["model_name"] == "wine"
    assert resp["model_version"] == "1"
    ids = resp["parameters"]["record_ids"].split(",")
    assert len(ids) == 7
    server.uv.should_exit = False
    got_events = {p.record_id: p for p in _wait_predictions(server, 7)}
    assert [got_events[i].output for i in ids] == [{"value": v} for v in expected]
    assert {(got_events[i].model, got_events[i].version) for i in ids} == {("wine-lr", 1)}


def _wait_predictions(server: Server, n: int) -> list[ev.Prediction]:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = predictions(server)
        if len(found) >= n:
            return found
        time.sleep(0.01)
    raise AssertionError(f"expected {n} predictions on the log, got {len(predictions(server))}")


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("pinned", [True, False])
def test_onnx_classifier_matrix_input(server: Server, binary: bool, pinned: bool) -> None:
    rows = churn_rows(9)
    matrix = np.array([[r[f] for f in FEATURES] for r in rows], dtype=np.float32)
    t = triton.InferInput("x", [9, len(FEATURES)], "FP32")
    t.set_data_from_numpy(matrix, binary_data=binary)
    outputs = (
        [
            triton.InferRequestedOutput("label", binary_data=binary),
            triton.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        if not binary
        else None  # no outputs named: tritonclient asks for every output in binary
    )
    version = "1" if pinned else ""
    result = client(server).infer(
        "churn", [t], model_version=version, outputs=outputs, headers=server.headers("predict")
    )
    expected = direct(server, "churn:1", rows)
    labels = result.as_numpy("label")
    probs = result.as_numpy("probabilities")
    assert [v.decode() if isinstance(v, bytes) else v for v in labels.tolist()] == [
        o["label"] for o in expected
    ]
    assert probs.shape == (9, 2)
    assert probs.tolist() == [list(o["probabilities"].values()) for o in expected]
    out = result.get_output("probabilities")
    assert out is not None
    assert (
        out["parameters"]["classes"]
        == msgspec.json.encode(list(expected[0]["probabilities"])).decode()
    )
    events = _wait_predictions(server, 9)
    assert {p.policy for p in events} == {"pinned" if pinned else "champion"}
    assert {(p.model, p.version, p.status) for p in events} == {("churn", 1, "ok")}


def test_per_feature_int_and_bool_inputs_and_errors(server: Server) -> None:
    rows = churn_rows(3)
    h = server.headers("predict")
    body = {
        "inputs": [
            {"name": f, "shape": [3], "datatype": "FP64", "data": [r[f] for r in rows]}
            for f in FEATURES
        ]
    }
    r = httpx.post(f"{server.url}/v2/models/churn/infer", json=body, headers=h)
    assert r.status_code == 200
    assert [o["name"] for o in r.json()["outputs"]] == ["label", "probabilities"]
    bad = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    r = httpx.post(f"{server.url}/v2/models/churn/infer", json=bad, headers=h)
    assert r.status_code == 400
    assert r.json() == {"error": "expected 6 elements for the shape, got 3 (input 'x')"}
    wrong_width = {
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
    }
    r = httpx.post(f"{server.url}/v2/models/churn/infer", json=wrong_width, headers=h)
    assert r.status_code == 400
    assert r.json()["error"].startswith("expected [N, 20] for features ['")
    ints = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]}
    r = httpx.post(f"{server.url}/v2/models/churn/infer", json=ints, headers=h)
    assert r.status_code == 400
    assert r.json() == {"error": "expected INT8 values in [-128, 127], got 300..300 (input 'x')"}
    r = httpx.post(f"{server.url}/v2/models/nothing/infer", json=body, headers=h)
    assert r.status_code == 404
    r = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=b'{"inputs": []}xx',
        headers={**h, "Inference-Header-Content-Length": "99"},
    )
    assert r.status_code == 400
    assert r.json() == {
        "error": "expected Inference-Header-Content-Length within the body's 16 bytes, got 99"
    }


def test_repository_and_statistics(server: Server) -> None:
    c = client(server)
    h = server.headers("admin")
    rows = churn_rows(4)
    t = triton.InferInput("x", [4, len(FEATURES)], "FP64")
    t.set_data_from_numpy(np.array([[r[f] for f in FEATURES] for r in rows]))
    c.infer("churn", [t], headers=h)
    index = c.get_model_repository_index(headers=h)
    assert {(e["name"], e["version"], e["state"]) for e in index} == {
        ("churn", "1", "READY"),
        ("wine-lr", "1", "READY"),
    }
    _wait_predictions(server, 4)
    stats = c.get_inference_statistics("churn", headers=h)
    assert [(s["name"], s["version"], s["inference_count"]) for s in stats["model_stats"]] == [
        ("churn", "1", 4)
    ]
    with pytest.raises(InferenceServerException, match="change the route first"):
        c.unload_model("churn", headers=h)
    c.load_model("wine-lr", headers=h)


def _infer_json(server: Server, rows: list[dict[str, float]]) -> httpx.Response:
    matrix = [[r[f] for f in FEATURES] for r in rows]
    body = {"inputs": [{"name": "x", "shape": [len(rows), len(FEATURES)], "datatype": "FP32",
                        "data": [v for row in matrix for v in row]}]}  # fmt: skip
    return httpx.post(
        f"{server.url}/v2/models/churn/infer", json=body, headers=server.headers("predict")
    )


def test_a_100_row_request_is_answered_and_logged_like_100_single_ones(server: Server) -> None:
    rows = churn_rows(100)
    singles = [_infer_json(server, [row]) for row in rows]
    batch = _infer_json(server, rows)
    assert [r.status_code for r in singles] == [200] * 100
    assert batch.status_code == 200
    outputs = {o["name"]: o["data"] for o in batch.json()["outputs"]}
    single_outputs = [{o["name"]: o["data"] for o in r.json()["outputs"]} for r in singles]
    assert outputs["label"] == [s["label"][0] for s in single_outputs]
    assert outputs["probabilities"] == [v for s in single_outputs for v in s["probabilities"]]
    batch_ids = batch.json()["parameters"]["record_ids"].split(",")
    single_ids = [r.json()["parameters"]["record_ids"] for r in singles]
    events = {p.record_id: p for p in _wait_predictions(server, 200)}
    assert len(events) == 200
    for one, many in zip(single_ids, batch_ids, strict=True):
        a, b = events[one], events[many]
        assert (b.status, b.model, b.version, b.output, b.features, b.policy) == (
            a.status, a.model, a.version, a.output, a.features, a.policy,
        )  # fmt: skip
        assert [(s.model, s.role, s.status, s.output) for s in b.scores] == [
            (s.model, s.role, s.status, s.output) for s in a.scores
        ]
    # in the request's order, in one append: consecutive offsets of one partition
    places = {
        p.record_id: (batch_.partition, offset)
        for batch_ in server.log.read_all("predictions")
        for offset, p in zip(batch_.offsets, ev.decode_many(batch_.values, ev.Prediction), strict=True)
    }  # fmt: skip
    spots = [places[i] for i in batch_ids]
    assert len({p for p, _ in spots}) == 1
    assert [o for _, o in spots] == list(range(spots[0][1], spots[0][1] + 100))
