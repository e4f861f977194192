"""A model upload and a route change during a bounded load test: nothing fails, one switch point."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from eventml import events as ev
from eventml.log import Log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy
from tests.api.conftest import Server, churn_rows, train_churn_onnx

SECONDS = 5.0
CONCURRENCY = 8


async def load(
    server: Server, new_model: bytes
) -> tuple[list[tuple[str, int, dict[str, object]]], list[str]]:
    rows = churn_rows(200)
    answers: list[tuple[str, int, dict[str, object]]] = []
    failures: list[str] = []
    stop = time.monotonic() + SECONDS
    counter = iter(range(1_000_000))
    h = server.headers("predict")

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            i = next(counter)
            rid = f"L{i}"
            try:
                r = await client.post(
                    "/api/endpoints/churn/predict",
                    json={"id": rid, "features": rows[i % len(rows)]},
                    headers=h,
                )
            except httpx.HTTPError as exc:
                failures.append(f"{rid}: {exc!r}")
                continue
            if r.status_code != 200 or r.json()["status"] != "ok":
                failures.append(f"{rid}: {r.status_code} {r.text}")
            else:
                answers.append((rid, r.status_code, r.json()))
            await asyncio.sleep(0.01)  # a few hundred requests, not a flood

    async def admin(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(1.5)
        up = await client.post(
            "/api/models", params={"name": "churn", "filename": "churn.onnx"},
            content=new_model, headers=server.headers("admin"),
        )  # fmt: skip
        assert (up.status_code, up.json()["version"]) == (201, 2), up.text
        await asyncio.sleep(1.0)
        put = await client.put(
            "/api/endpoints/churn/route", json={"champion": "churn:2"},
            headers=server.headers("admin"),
        )  # fmt: skip
        assert put.status_code == 200, put.text

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await asyncio.gather(admin(client), *(worker(client) for _ in range(CONCURRENCY)))
    return answers, failures


def test_upload_and_route_change_under_load(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first, second = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    train_churn_onnx(first, depth=6)
    train_churn_onnx(second, depth=3)

    def setup(log: Log) -> None:
        push_model(log, first, "churn")
        deploy(log, "churn", "churn")

    server = make_server(setup)
    answers, failures = asyncio.run(load(server, second.read_bytes()))
    assert failures == []
    assert len(answers) >= 200
    server.stop()  # flushes every queued answer to the log
    logged = [
        p
        for batch in server.log.read_all("predictions")
        for p in ev.decode_many(batch.values, ev.Prediction)
    ]
    by_id = {p.record_id: p for p in logged}
    assert len(logged) == len(by_id) == len(answers)  # every request logged, once
    assert all(by_id[rid].version == a["version"] for rid, _, a in answers)
    versions = [p.version for p in logged]  # in log order
    switch = versions.index(2)
    assert versions == [1] * switch + [2] * (len(versions) - switch)
    assert 0 < switch < len(versions)
    assert {p.route_version for p in logged[:switch]} == {1}
    assert {p.route_version for p in logged[switch:]} == {2}
