"""schemathesis against ``/openapi.json``: no 5xx, and every response as the document says.

Bounded: at most 30 generated examples per operation, no per-example deadline (a shared
2-core machine), against one real server over a SQLite log with a PMML and an ONNX model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from eventml.api.app import create_app
from eventml.api.openapi import document
from eventml.config import Settings
from eventml.log import Log, open_log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy
from tests.api.conftest import WINE_LR, Server, start_server, train_churn_onnx

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("openapi")
    onnx = folder / "churn.onnx"
    train_churn_onnx(onnx)

    def setup(log: Log) -> None:
        push_model(log, WINE_LR, "wine-lr", endpoint="wine")
        deploy(log, "wine", "wine-lr")
        push_model(log, onnx, "churn")
        deploy(log, "churn", "churn")

    found = start_server(folder / "log", setup)
    yield found
    found.stop()
    found.log.close()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_matches_its_document(case: schemathesis.Case[Any], server: Server) -> None:
    case.call_and_validate(
        base_url=server.url, headers=server.headers("admin"), checks=CHECKS, timeout=30
    )


def test_the_document_names_every_route_and_only_those(tmp_path: Path) -> None:
    with open_log("memory://", Settings()) as log:
        app = create_app(log, Settings())
        served = {
            (r.path, m.lower())
            for r in app.routes
            if isinstance(r, Route)
            for m in (r.methods or ())
            if m != "HEAD"
        }
    documented = {(p, m) for p, ops in document()["paths"].items() for m in ops}
    assert served == documented


def test_the_served_document_is_the_module_one(server: Server) -> None:
    assert httpx.get(f"{server.url}/openapi.json").json() == document()
