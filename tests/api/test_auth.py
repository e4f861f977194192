"""The auth matrix: every route against no token, a bad token and each role; tokens stored hashed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventml.api.auth import TokenStore, tokens_path
from eventml.demo import FEATURES
from eventml.log import Log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy
from tests.api.conftest import WINE_LR, Server, churn_rows, train_churn_onnx, wine_rows

ROLES = ("read", "predict", "admin")


@pytest.fixture(scope="module")
def onnx_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("m") / "churn.onnx"
    train_churn_onnx(path)
    return path.read_bytes()


def operations(onnx: bytes) -> list[tuple[str, str, dict[str, Any], str | None, int]]:
    """(method, path, request kwargs, role needed, status when allowed)."""
    row = wine_rows(1)[0]
    infer = {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in row.items()
        ]
    }
    matrix = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 20],
                "datatype": "FP64",
                "data": [churn_rows(1)[0][f] for f in FEATURES],
            }
        ]
    }
    return [
        ("GET", "/v2/health/live", {}, None, 200),
        ("GET", "/v2/health/ready", {}, None, 200),
        ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/v2", {}, "read", 200),
        ("GET", "/v2/models/wine", {}, "read", 200),
        ("GET", "/v2/models/wine-lr/versions/1", {}, "read", 200),
        ("GET", "/v2/models/wine/ready", {}, "read", 200),
        ("GET", "/v2/models/wine-lr/versions/1/ready", {}, "read", 200),
        ("GET", "/v2/models/wine/stats", {}, "read", 200),
        ("GET", "/v2/models/wine-lr/versions/1/stats", {}, "read", 200),
        ("GET", "/v2/models/stats", {}, "read", 200),
        ("POST", "/v2/repository/index", {}, "read", 200),
        ("GET", "/api/models", {}, "read", 200),
        ("GET", "/api/endpoints/wine/route", {}, "read", 200),
        ("GET", "/api/stats", {}, "read", 200),
        ("GET", "/metrics", {}, "read", 200),
        ("GET", "/api/predictions/fixed-1", {}, "read", 200),
        ("POST", "/v2/models/wine/infer", {"json": infer}, "predict", 200),
        ("POST", "/v2/models/wine-lr/versions/1/infer", {"json": infer}, "predict", 200),
        ("POST", "/v2/models/churn/infer", {"json": matrix}, "predict", 200),
        ("POST", "/api/endpoints/wine/predict", {"json": {"features": row}}, "predict", 200),
        ("POST", "/api/labels", {"json": {"record_id": "fixed-1", "value": 5}}, "predict", 201),
        ("POST", "/api/models", {"params": {"name": "churn", "filename": "c.onnx"}, "content": onnx}, "admin", 200),
        ("PUT", "/api/endpoints/wine/route", {"json": {"champion": "wine-lr:1"}}, "admin", 200),
        ("POST", "/v2/repository/models/churn/load", {}, "admin", 200),
        ("POST", "/v2/repository/models/churn/unload", {}, "admin", 200),
    ]  # fmt: skip


def test_every_route_against_every_role(
    make_server: Callable[..., Server], tmp_path: Path, onnx_bytes: bytes
) -> None:
    model = tmp_path / "churn.onnx"
    model.write_bytes(onnx_bytes)

    def setup(log: Log) -> None:
        push_model(log, WINE_LR, "wine-lr", endpoint="wine")
        deploy(log, "wine", "wine-lr")
        push_model(log, model, "churn")

    server = make_server(setup)
    seeded = httpx.post(
        f"{server.url}/api/endpoints/wine/predict",
        json={"id": "fixed-1", "features": wine_rows(1)[0]}, headers=server.headers("predict"),
    )  # fmt: skip
    assert seeded.status_code == 200
    table = []
    for method, path, kwargs, needed, ok in operations(onnx_bytes):
        got = {}
        for who in ("none", "bogus", *ROLES):
            headers = (
                {"Authorization": "Bearer eml_nobody_xyz"}
                if who == "bogus"
                else server.headers(who)
            )
            r = httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)
            got[who] = r.status_code
            if r.status_code >= 400:
                assert set(r.json()) == {"error"}, (method, path, who, r.text)
        if needed is None:
            expected = dict.fromkeys(("none", "bogus", *ROLES), ok)
        else:
            expected = {"none": 401, "bogus": 401}
            for role in ROLES:
                expected[role] = ok if ROLES.index(role) >= ROLES.index(needed) else 403
        table.append((method, path, got == expected, got))
    assert [t for t in table if not t[2]] == []


def test_no_auth_serves_everyone(make_server: Callable[..., Server]) -> None:
    server = make_server(lambda log: push_model(log, WINE_LR, "wine-lr"), auth=False)
    r = httpx.get(f"{server.url}/api/models")
    assert (r.status_code, [m["name"] for m in r.json()]) == (200, ["wine-lr"])


def test_a_missing_token_says_how_to_send_one(make_server: Callable[..., Server]) -> None:
    server = make_server()
    r = httpx.get(f"{server.url}/api/models")
    assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
    assert r.json() == {"error": "expected an Authorization: Bearer TOKEN header, got none"}
    r = httpx.put(f"{server.url}/api/endpoints/x/route", json={}, headers=server.headers("predict"))
    assert (r.status_code, r.json()) == (
        403,
        {"error": "expected a token with role 'admin', got role 'predict'"},
    )


def test_tokens_create_stores_only_a_digest(tmp_path: Path) -> None:
    data = tmp_path / "log"
    env = {**os.environ, "EVENTML_LOG": str(data)}
    code = "from eventml.cli import app; from eventml.api.cli import register; register(app); app()"
    done = subprocess.run(
        [sys.executable, "-c", code, "tokens", "create", "--role", "predict"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    token = done.stdout.strip()
    assert token.startswith("eml_")
    path = tokens_path(str(data))
    assert path == data / "tokens.json"
    text = path.read_text()
    assert token not in text
    assert token.split("_", 2)[2] not in text  # the whole secret (it may hold "_" itself)
    stored = json.loads(text)["tokens"]
    assert [(t["role"], t["id"]) for t in stored] == [("predict", token.split("_")[1])]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TokenStore(path).role_of(f"Bearer {token}") == "predict"
    bad = subprocess.run(
        [sys.executable, "-c", code, "tokens", "create", "--role", "root"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
