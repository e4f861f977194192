"""The native JSON API over a real server: predict, label, audit; models, routes, stats, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventml import events as ev
from eventml.api import ApiOptions
from eventml.log import Log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy
from tests.api.conftest import WINE_LR, Server, churn_rows, train_churn_onnx, wine_rows


@pytest.fixture
def server(make_server: Callable[..., Server], tmp_path: Path) -> Server:
    def setup(log: Log) -> None:
        push_model(log, WINE_LR, "wine-lr", endpoint="wine")
        deploy(log, "wine", "wine-lr")

    return make_server(setup)


def test_predict_label_audit_round_trip(server: Server) -> None:
    rows = wine_rows(3)
    h = server.headers("predict")
    one = httpx.post(
        f"{server.url}/api/endpoints/wine/predict",
        json={"id": "w-1", "key": "cellar-7", "ts": "2026-01-02T03:04:05Z", "features": rows[0]},
        headers=h,
    )
    assert one.status_code == 200
    answer = one.json()
    assert {k: answer[k] for k in ("id", "endpoint", "status", "model", "version", "policy")} == {
        "id": "w-1", "endpoint": "wine", "status": "ok", "model": "wine-lr", "version": 1,
        "policy": "champion",
    }  # fmt: skip
    many = httpx.post(
        f"{server.url}/api/endpoints/wine/predict",
        json=[{"features": r} for r in rows[1:]],
        headers=h,
    )
    assert many.status_code == 200
    assert [a["status"] for a in many.json()] == ["ok", "ok"]
    ids = [a["id"] for a in many.json()]
    assert all(len(i) == 32 for i in ids)

    label = httpx.post(
        f"{server.url}/api/labels", json=[{"record_id": "w-1", "value": 5}], headers=h
    )
    assert label.status_code == 201
    assert label.json() == {
        "appended": 1, "by_record": 1, "by_entity": 0, "first_offset": 0, "last_offset": 0,
    }  # fmt: skip
    unknown = httpx.post(
        f"{server.url}/api/labels", json={"record_id": "nope", "value": 1}, headers=h
    )
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": "expected labels for predicted records, got 1 unknown record id(s): nope"
    }

    audit = httpx.get(f"{server.url}/api/predictions/w-1", headers=server.headers("read"))
    assert audit.status_code == 200
    event = audit.json()
    assert (event["record_id"], event["model"], event["version"], event["status"]) == (
        "w-1", "wine-lr", 1, "ok",
    )  # fmt: skip
    assert event["key"] == "cellar-7"
    assert event["ts"] == "2026-01-02T03:04:05Z"
    assert event["output"] == answer["output"]
    assert event["features"] == rows[0]
    assert [(s["model"], s["version"], s["role"], s["status"]) for s in event["scores"]] == [
        ("wine-lr", 1, "champion", "ok")
    ]
    assert event["source"]["topic"] == "records"
    # the record is on the log, answered, at the source position the prediction names
    src = event["source"]
    rec = ev.decode(
        server.log.read("records", src["partition"], src["offset"], src["offset"] + 1).values[0]
    )
    assert (rec.id, rec.answered, rec.key) == ("w-1", True, "cellar-7")
    missing = httpx.get(f"{server.url}/api/predictions/zzz", headers=server.headers("read"))
    assert missing.status_code == 404
    assert missing.json() == {"error": "expected a record id with a prediction, got 'zzz'"}


def test_audit_falls_back_to_scanning_the_log(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    folder = tmp_path / "shared"
    first = make_server(
        lambda log: (push_model(log, WINE_LR, "wine-lr"), deploy(log, "wine", "wine-lr")),
        folder=folder,
    )
    r = httpx.post(
        f"{first.url}/api/endpoints/wine/predict",
        json={"id": "a-1", "features": wine_rows(1)[0]},
        headers=first.headers(),
    )
    assert r.status_code == 200
    first.stop()  # flushes the writer
    second = make_server(folder=folder)  # a new server: its index is empty
    audit = httpx.get(f"{second.url}/api/predictions/a-1", headers=second.headers("read"))
    assert audit.status_code == 200
    assert (audit.json()["record_id"], audit.json()["version"]) == ("a-1", 1)


def test_bad_records_are_400_with_the_reason(server: Server) -> None:
    h = server.headers("predict")
    cases = [
        ({"features": {"alcohol": [1]}}, "expected a record {id?, key?, ts?, features}, got Expected `bool | int | float | str | null`, got `array` - at `$.features[...]` (record 0)"),
        ({"feature": {}}, "expected a record {id?, key?, ts?, features}, got Object contains unknown field `feature` (record 0)"),
        ([], "expected at least one record, got an empty list"),
    ]  # fmt: skip
    for body, message in cases:
        r = httpx.post(f"{server.url}/api/endpoints/wine/predict", json=body, headers=h)
        assert (r.status_code, r.json()) == (400, {"error": message})
    r = httpx.post(f"{server.url}/api/endpoints/wine/predict", content=b"{", headers=h)
    assert r.status_code == 400
    assert r.json()["error"].startswith("expected JSON, got ")
    r = httpx.post(
        f"{server.url}/api/endpoints/wine/predict", json={"features": {"alcohol": 9.0}}, headers=h
    )
    assert r.status_code == 400  # the model needs more features than the record has
    assert "expected features" in r.json()["error"]
    r = httpx.post(
        f"{server.url}/api/endpoints/nowhere/predict", json={"features": {"a": 1}}, headers=h
    )
    assert (r.status_code, r.json()["status"], r.json()["model"]) == (200, "no_model", None)
    r = httpx.post(
        f"{server.url}/api/endpoints/wine/predict",
        content=b"x" * (8 * 1024 * 1024 + 1),
        headers=h,
    )
    assert r.status_code == 413
    r = httpx.delete(f"{server.url}/api/labels", headers=h)
    assert r.status_code == 405


def test_models_routes_stats_metrics(server: Server, tmp_path: Path) -> None:
    h = server.headers("admin")
    onnx = tmp_path / "churn.onnx"
    train_churn_onnx(onnx)
    up = httpx.post(
        f"{server.url}/api/models",
        params={"name": "churn", "filename": "churn.onnx"},
        content=onnx.read_bytes(),
        headers=h,
    )
    assert up.status_code == 201, up.text
    assert (up.json()["name"], up.json()["version"], up.json()["format"], up.json()["created"]) == (
        "churn", 1, "onnx", True,
    )  # fmt: skip
    train_churn_onnx(onnx, depth=3)
    form = httpx.post(
        f"{server.url}/api/models",
        params={"name": "churn"},
        files={"file": ("churn.onnx", onnx.read_bytes(), "application/octet-stream")},
        headers=h,
    )
    assert (form.status_code, form.json()["version"]) == (201, 2)
    again = httpx.post(
        f"{server.url}/api/models", params={"name": "churn", "filename": "c.onnx"},
        content=onnx.read_bytes(), headers=h,
    )  # fmt: skip
    assert (again.status_code, again.json()["version"], again.json()["created"]) == (200, 2, False)
    junk = httpx.post(
        f"{server.url}/api/models",
        params={"name": "junk", "format": "onnx"},
        content=b"junk",
        headers=h,
    )
    assert junk.status_code == 400
    listed = httpx.get(f"{server.url}/api/models", headers=h).json()
    assert [(m["name"], m["version"]) for m in listed] == [
        ("churn", 1),
        ("churn", 2),
        ("wine-lr", 1),
    ]

    put = httpx.put(
        f"{server.url}/api/endpoints/churn/route", json={"champion": "churn:1"}, headers=h
    )
    assert (put.status_code, put.json()["version"], put.json()["champion"]) == (200, 1, "churn:1")
    bad = httpx.put(f"{server.url}/api/endpoints/churn/route", json={"decider": "split"}, headers=h)
    assert bad.status_code == 400
    route = httpx.get(f"{server.url}/api/endpoints/churn/route", headers=h).json()
    assert route["current"] == route["history"][0]
    assert route["current"]["spec"] == {"champion": "churn:1"}

    r = httpx.post(
        f"{server.url}/api/endpoints/churn/predict",
        json=[{"features": row} for row in churn_rows(5)],
        headers=h,
    )
    assert {(a["model"], a["version"]) for a in r.json()} == {("churn", 1)}
    stats = httpx.get(f"{server.url}/api/stats", headers=h).json()
    assert {(v["model"], v["version"], v["usage"]) for v in stats["versions"]} == {("churn", 1, 5)}
    assert stats["endpoints"] == {"churn": {"ok": 5}}
    text = httpx.get(f"{server.url}/metrics", headers=h).text
    assert (
        'eventml_predictions_total{endpoint="churn",model="churn",status="ok",version="1"} 5.0'
        in text
    )
    assert (
        'eventml_http_requests_total{method="POST",route="/api/endpoints/{endpoint}/predict",status="200"} 1.0'
        in text
    )


def test_sync_mode_commits_before_answering(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    folder = tmp_path / "sync"
    server = make_server(
        lambda log: (push_model(log, WINE_LR, "wine-lr"), deploy(log, "wine", "wine-lr")),
        options=ApiOptions(sync=True, log_url=str(folder)),
        folder=folder,
    )
    for i, row in enumerate(wine_rows(20)):
        r = httpx.post(
            f"{server.url}/api/endpoints/wine/predict",
            json={"id": f"s{i}", "features": row},
            headers=server.headers(),
        )
        assert r.status_code == 200
        # answered means on the log: a reader that is not this server sees it at once
        ids = {
            p.record_id
            for b in server.log.read_all("predictions")
            for p in ev.decode_many(b.values, ev.Prediction)
        }
        assert f"s{i}" in ids


def _with_slow_model(
    make_server: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    latency_ms: int,
    routes: dict[str, str],
    **options: Any,
) -> Server:
    """A server with ``wine-lr`` and ``slow`` (wine-lr answering after ``latency_ms``)."""
    import json as jsonlib

    monkeypatch.setenv("EVENTML_TESTING", "1")
    slow = tmp_path / "slow.json"
    slow.write_text(jsonlib.dumps({"wraps": "wine-lr:1", "latency_ms": latency_ms, "jitter_ms": 0}))

    def setup(log: Log) -> None:
        push_model(log, WINE_LR, "wine-lr")
        push_model(log, slow, "slow", format="test-latency")
        for endpoint, model in routes.items():
            deploy(log, endpoint, model)

    folder = tmp_path / "slow-log"
    return make_server(setup, options=ApiOptions(log_url=str(folder), **options), folder=folder)


def test_overload_is_429_and_the_rest_are_answered(
    make_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    server = _with_slow_model(
        make_server, tmp_path, monkeypatch, 3000, {"wine": "slow"}, max_in_flight=2
    )

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/endpoints/wine/predict",
                        json={"features": wine_rows(1)[0]},
                        headers=server.headers(),
                    )
                    for _ in range(8)
                )
            )

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 429, 429, 429, 429, 429, 429]
    refused = [r for r in answers if r.status_code == 429]
    assert {r.headers["retry-after"] for r in refused} == {"1"}
    assert {r.json()["error"] for r in refused} == {
        "expected at most 2 requests in flight, got more: retry later"
    }
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_a_request_past_its_timeout_is_503_and_the_server_goes_on(
    make_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import json as jsonlib

    server = _with_slow_model(
        make_server, tmp_path, monkeypatch, 1500, {"wine": "wine-lr", "sleepy": "slow"},
        timeout_s=0.3,
    )  # fmt: skip
    late = {"error": "expected an answer within 0.3 s, got none in time"}
    record = {"features": wine_rows(1)[0]}

    async def requests() -> list[httpx.Response]:
        async def trickle() -> AsyncIterator[bytes]:  # a body slower than the timeout
            yield b'{"features": '
            await asyncio.sleep(0.8)
            yield jsonlib.dumps(record["features"]).encode() + b"}"

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            h = server.headers()
            return [
                await client.post("/api/endpoints/sleepy/predict", json=record, headers=h),
                await client.post("/api/endpoints/wine/predict", content=trickle(), headers=h),
                await client.post("/api/endpoints/wine/predict", json=record, headers=h),
            ]

    slow_model, slow_body, fine = asyncio.run(requests())
    for r in (slow_model, slow_body):
        assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, late, "1")
    assert (fine.status_code, fine.json()["status"], fine.json()["model"]) == (200, "ok", "wine-lr")
    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers("read")).text
    route = 'method="POST",route="/api/endpoints/{endpoint}/predict"'
    assert f'eventml_http_requests_total{{{route},status="503"}} 2.0' in metrics
    assert f'eventml_http_requests_total{{{route},status="200"}} 1.0' in metrics
    assert "eventml_http_in_flight 1.0" in metrics  # the /metrics request itself


def _logged(server: Server, n: int) -> dict[str, ev.Prediction]:
    import time

    deadline = time.monotonic() + 10
    while True:
        found = {
            p.record_id: p
            for batch in server.log.read_all("predictions")
            for p in ev.decode_many(batch.values, ev.Prediction)
        }
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_a_list_of_100_records_is_answered_like_100_requests(server: Server) -> None:
    h = server.headers("predict")
    url = f"{server.url}/api/endpoints/wine/predict"
    rows: list[dict[str, object]] = [dict(r) for r in wine_rows(100)]
    rows[37]["alcohol"] = "abc"
    singles = [httpx.post(url, json={"id": f"s{i}", "features": r}, headers=h) for i, r in enumerate(rows)]  # fmt: skip
    batch = httpx.post(url, json=[{"id": f"b{i}", "features": r} for i, r in enumerate(rows)], headers=h)  # fmt: skip
    assert [r.status_code for r in singles] == [200] * 37 + [400] + [200] * 62
    assert singles[37].json() == {
        "error": "expected a record the model can score, got: expected a number for feature "
        "'alcohol', got \"abc\" (row 0)"
    }
    assert batch.status_code == 200
    answers = batch.json()
    assert [a["id"] for a in answers] == [f"b{i}" for i in range(100)]
    assert [a["status"] for a in answers] == ["ok"] * 37 + ["error"] + ["ok"] * 62
    assert answers[37]["error"] == "expected a number for feature 'alcohol', got \"abc\" (row 37)"
    assert [a["output"] for i, a in enumerate(answers) if i != 37] == [
        r.json()["output"] for i, r in enumerate(singles) if i != 37
    ]
    events = _logged(server, 200)
    assert len(events) == 200
    for i in range(100):
        one, many = events[f"s{i}"], events[f"b{i}"]
        assert (many.status, many.model, many.version, many.output, many.features) == (
            one.status, one.model, one.version, one.output, one.features,
        )  # fmt: skip
    order = [
        p.record_id
        for batch_ in server.log.read_all("predictions")
        for p in ev.decode_many(batch_.values, ev.Prediction)
        if p.record_id.startswith("b")
    ]
    assert order == [f"b{i}" for i in range(100)]
