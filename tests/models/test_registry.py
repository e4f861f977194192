"""The registry view, pushing models, and every kind of bad model refused at push time."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import msgspec
import onnx
import pytest
from onnx import TensorProto, helper

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError, ModelRejected, NotFound
from eventml.log import open_log
from eventml.models.registry import Registry, load_model, parse_ref, push_model, read_payload

WINE_MODELS = Path(__file__).parents[3] / "shared" / "data" / "wine" / "models"
LR = WINE_MODELS / "winequalityLinearRegression.pmml"
TREE = WINE_MODELS / "winequalityDesisionTreeRegression.pmml"


def test_rebuilding_from_zero_equals_the_incremental_fold(tmp_path: Path) -> None:
    with open_log(str(tmp_path), Settings()) as log:
        incremental = Registry()
        incremental.catch_up(log)
        push_model(log, LR, "lr")
        incremental.catch_up(log)
        push_model(log, TREE, "lr")
        push_model(log, TREE, "tree", endpoint="wine", description="a tree")
        log.append(
            "models", [ev.encode(ev.ModelRejected(name="x", digest="d", reason="r", ts=ev.now()))]
        )
        log.append(
            "models",
            [ev.encode(ev.RouteChanged(endpoint="wine", version=1, champion="lr:2", ts=ev.now()))],
        )
        incremental.catch_up(log)
        rebuilt = Registry.from_log(log)
    assert rebuilt.state() == incremental.state()
    assert [(d.name, d.version) for d in rebuilt.all()] == [("lr", 1), ("lr", 2), ("tree", 1)]
    assert rebuilt.position == 5
    assert rebuilt.resolve("lr").version == 2
    assert rebuilt.resolve("lr:1").digest == incremental.resolve("lr:1").digest
    assert [r.champion for r in rebuilt.routes["wine"]] == ["lr:2"]
    assert rebuilt.rejected[0].reason == "r"


def test_resolve_errors() -> None:
    registry = Registry()
    with pytest.raises(NotFound, match="expected a pushed model, got 'nope'"):
        registry.resolve("nope")
    with pytest.raises(InputError) as err:
        parse_ref("m:x")
    assert str(err.value) == 'expected a model version that is a positive integer, got "x" (m:x)'
    assert parse_ref("m:3") == ("m", 3)


def test_location_is_read_and_checked_against_the_digest(tmp_path: Path) -> None:
    model_file = tmp_path / "lr.pmml"
    model_file.write_bytes(LR.read_bytes())
    with open_log("memory://", Settings()) as log:
        pushed = push_model(log, model_file, "lr", location=True)
        registry = Registry.from_log(log)
        stored = registry.descriptor_with_payload(log, "lr", 1)
    assert stored.payload is None
    assert stored.location == model_file.resolve().as_uri()
    assert pushed.descriptor.size == len(LR.read_bytes())
    assert load_model(stored).predict_batch(
        [dict.fromkeys(load_model(stored).feature_names, 0.0)]
    ) == [{"value": 3.282519468977813}]
    model_file.write_bytes(LR.read_bytes().replace(b"3.28", b"9.28"))
    with pytest.raises(ModelRejected, match=f"expected digest {stored.digest}, got "):
        read_payload(stored)


def test_concurrent_pushes_of_one_name_get_distinct_versions(tmp_path: Path) -> None:
    with open_log(str(tmp_path), Settings()) as a, open_log(str(tmp_path), Settings()) as b:
        first = push_model(a, LR, "m")
        second = push_model(b, TREE, "m")
        assert (first.descriptor.version, second.descriptor.version) == (1, 2)
        registry = Registry.from_log(a)
        assert sorted(registry.versions["m"]) == [1, 2]


def billion_laughs() -> bytes:
    ents = "".join(
        f'<!ENTITY lol{i} "{"&lol" + str(i - 1) + ";" if i else "lol"}' * 1 + '">'
        for i in range(10)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE PMML [{ents}]><PMML version="4.3">&lol9;</PMML>'.encode()
    )


def onnx_with_missing_input() -> bytes:
    node = helper.make_node("Add", ["x", "not_declared"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data: bytes = model.SerializeToString()
    return data


BAD_MODELS: list[tuple[str, bytes, list[str], str]] = [
    (
        "corrupt.onnx",
        b"\x08\x07garbage" * 50,
        [],
        "error: expected an ONNX model, got [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Failed to load model because protobuf parsing failed. (model bad)",
    ),
    (
        "truncated.pmml",
        LR.read_bytes()[:900],
        [],
        "error: expected a well-formed PMML document, got unclosed token (line 17, column 12) (model bad)",
    ),
    (
        "graph.pmml",
        (WINE_MODELS / "optimized_WineQuality.pb").read_bytes(),
        ["--format", "pmml"],
        "error: expected a well-formed PMML document, got syntax error (line 2, column 0) (model bad)",
    ),
    ("model.bin", b"\x00\x01\x02 something", [], "error: expected a model file of a known format"),
    (
        "laughs.pmml",
        billion_laughs(),
        [],
        "error: expected a PMML document without a DOCTYPE (PMML never needs one; refused for safety), got a DOCTYPE declaration (model bad)",
    ),
    (
        "external.pmml",
        b'<?xml version="1.0"?><!DOCTYPE PMML [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<PMML version="4.3">&e;</PMML>',
        [],
        "error: expected a PMML document without a DOCTYPE (PMML never needs one; refused for safety), got a DOCTYPE declaration (model bad)",
    ),
    (
        "model.pkl",
        pickle.dumps({"a": 1}),
        ["--format", "sklearn"],
        "error: expected a skops file, got BadZipFile: File is not a zip file (model bad)",
    ),
    (
        "missing-input.onnx",
        onnx_with_missing_input(),
        [],
        "error: expected an ONNX model, got [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid model. Node input 'not_declared' is not a graph input, initializer, or output of a previous node. (model bad)",
    ),
]


@pytest.mark.parametrize(("filename", "content", "flags", "message"), BAD_MODELS)
def test_bad_models_are_refused_and_append_nothing(
    tmp_path: Path, filename: str, content: bytes, flags: list[str], message: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    log_dir = tmp_path / "log"
    env = {**os.environ, "COLUMNS": "300"}
    result = subprocess.run(
        [sys.executable, "-m", "eventml.cli", "models", "push", str(path), "--name", "bad",
         "--data", str(log_dir), *flags],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    if message.endswith(")"):  # a whole message: exactly this, nothing more
        assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with open_log(str(log_dir), Settings()) as log:
        assert "models" not in log.topics() or log.end_offsets("models") == [0]


def test_pickle_bytes_are_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.skops"
    path.write_bytes(pickle.dumps(Boom()))
    with open_log("memory://", Settings()) as log, pytest.raises(ModelRejected):
        push_model(log, path, "evil")
    assert not (tmp_path / "pwned").exists()


def test_descriptor_json_has_no_payload_and_the_contract_fields(tmp_path: Path) -> None:
    with open_log("memory://", Settings()) as log:
        d = push_model(log, LR, "lr", endpoint="wine").descriptor
    data = msgspec.json.decode(ev.to_json(d))
    assert data["payload"] is None
    assert [s["name"] for s in data["inputs"]] == [
        "fixed acidity", "volatile acidity", "chlorides", "total sulfur dioxide", "sulphates",
        "alcohol",
    ]  # fmt: skip
    assert data["outputs"] == [{"name": "quality", "dtype": "double", "shape": [-1]}]
    assert data["endpoint"] == "wine"
    assert data["lineage"]["source_path"] == str(LR.resolve())


def test_onnx_model_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_with_missing_input())
    assert onnx.load_from_string(path.read_bytes()).graph.node[0].op_type == "Add"
