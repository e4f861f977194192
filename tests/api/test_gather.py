"""Requests for one route that arrive before the event loop's next turn are answered together:
one model call, each request its own answers, a bad row failing only its own request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from eventml import events as ev
from eventml.api._service import ApiOptions, Service, new_id
from eventml.api.metrics import Metrics
from eventml.config import Settings
from eventml.errors import InputError
from eventml.log import open_log
from eventml.models.registry import push_model
from eventml.serving.routes import deploy
from eventml.serving.spec import RouteSpec
from tests.api.conftest import churn_rows, train_churn_onnx


def _record(features: Mapping[str, ev.Feature]) -> ev.Record:
    return ev.Record(id=new_id(), endpoint="churn", ts=ev.now(), features=dict(features))


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    """A started service over a SQLite log with churn:1 on ``churn`` (each test stops it)."""
    onnx = tmp_path / "churn.onnx"
    train_churn_onnx(onnx)
    settings = Settings.from_env(log=str(tmp_path / "log"))
    with open_log(str(tmp_path / "log"), settings) as log:
        push_model(log, onnx, "churn")
        deploy(log, "churn", "churn")
        service = Service(log, settings, ApiOptions(), Metrics())
        service.start()
        yield service


async def _warm(svc: Service, rows: Sequence[Mapping[str, ev.Feature]]) -> None:
    """The route measured (its first calls go to threads), then one gathering of several."""
    for _ in range(2):
        await asyncio.gather(*(svc.predict([_record(r)]) for r in rows))


def test_requests_arriving_together_share_one_model_call(svc: Service) -> None:
    rows = churn_rows(9)
    bad = {k: v for k, v in rows[8].items() if k != "tenure_months"}
    calls: list[int] = []

    async def run() -> tuple[list[Any], Sequence[list[Any]], Any]:
        await _warm(svc, rows[:4])
        model = svc.rendezvous.models["churn:1"]
        scored = model.predict_batch

        def counted(features: Sequence[Mapping[str, ev.Feature]]) -> Sequence[dict[str, Any]]:
            calls.append(len(features))
            return scored(features)

        model.predict_batch = counted  # type: ignore[method-assign, assignment]
        alone = [scored([r])[0] for r in rows[1:8]]
        together = await asyncio.gather(
            svc.predict([_record(rows[1])]),
            svc.predict([_record(r) for r in rows[2:5]]),
            svc.predict([_record(rows[5]), _record(bad)]),
            svc.predict([_record(rows[6])]),
            svc.predict([_record(rows[7])]),
        )
        return alone, together, svc.failure

    try:
        alone, together, failure = asyncio.run(run())
    finally:
        svc.stop()
    # one call for the 8 records of the five requests; the bad row fails it, so each row is
    # then scored alone (9 calls of 1), as the requests would have been
    assert calls == [8, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [len(a) for a in together] == [1, 3, 2, 1, 1]
    answers = [a for request in together for a in request]
    assert [a.status for a in answers] == ["ok"] * 5 + ["error", "ok", "ok"]
    assert [a.output for a in answers if a.status == "ok"] == alone
    third = together[2]
    why = failure(third[1].record_id)
    assert why == (
        f"expected features ['tenure_months'] for model 'churn', got fields {sorted(bad)} (row 1)"
    )


def test_requests_coming_one_at_a_time_are_answered_at_once(svc: Service) -> None:
    """After a gathering that held one request, requests are answered without waiting for
    the loop's next turn, except one in eight, which looks for company again; those that
    arrive with it join it, and gathering goes on while it finds company."""
    rows = churn_rows(40)
    gathered: list[int] = []
    answer_gathered = svc._answer_gathered

    def counted(key: tuple[str, int], gather: Any) -> None:
        gathered.append(len(gather.records))
        answer_gathered(key, gather)

    async def run() -> list[str]:
        await _warm(svc, rows[:4])
        svc._answer_gathered = counted  # type: ignore[method-assign]
        statuses: list[str] = []
        for row in rows[4:21]:  # one at a time
            (answer,) = await svc.predict([_record(row)])
            statuses.append(answer.status)
        for crowd in (rows[21:33], rows[33:36]):
            answers = await asyncio.gather(*(svc.predict([_record(r)]) for r in crowd))
            statuses += [a.status for request in answers for a in request]
        return statuses

    try:
        statuses = asyncio.run(run())
    finally:
        svc.stop()
    assert statuses == ["ok"] * 32
    # one at a time: the 1st finds itself alone, the 2nd to 8th are answered at once, the
    # 9th looks (alone), the 10th to 16th at once, the 17th looks; twelve together: seven at
    # once, the 8th looks and the four after it join it; three together: all gathered
    assert gathered == [1, 1, 1, 5, 3]


def test_a_request_the_log_cannot_hold_fails_alone(svc: Service) -> None:
    """A feature no log event can hold fails the gathered call after scoring: each request
    is then answered on its own, so only the one that carries it fails."""
    rows = churn_rows(7)
    huge = {**rows[5], "tenure_months": 10**30}

    async def run() -> tuple[list[Any], BaseException | None]:
        await _warm(svc, rows[:4])
        together = await asyncio.gather(
            svc.predict([_record(rows[4])]),
            svc.predict([_record(huge)]),
            svc.predict([_record(rows[6])]),
            return_exceptions=True,
        )
        try:
            await svc.predict([_record(huge)])  # alone: the same failure
        except Exception as exc:
            return list(together), exc
        return list(together), None

    try:
        together, alone = asyncio.run(run())
    finally:
        svc.stop()
    first, failed, last = together
    assert [a.status for a in first] == ["ok"]
    assert [a.status for a in last] == ["ok"]
    assert isinstance(failed, InputError)
    assert isinstance(alone, InputError)
    assert (
        str(failed)
        == str(alone)
        == (
            "expected integers within 64 bits, got can't serialize ints < -2**63 or > 2**64 - 1 "
            "(encoding a Record)"
        )
    )


def test_requests_gathered_before_a_route_change_are_answered_by_the_new_route(
    svc: Service, tmp_path: Path
) -> None:
    """Gathered for a one-model route that, before the loop's next turn, becomes one with a
    shadow (it waits for both models): answered by the new route, scored on a thread."""
    import threading

    shadow = tmp_path / "shadow.onnx"
    train_churn_onnx(shadow, seed=1)
    push_model(svc.log, shadow, "churn-shadow")
    rows = churn_rows(7)
    on_loop: list[bool] = []

    async def run() -> tuple[list[Any], int]:
        await _warm(svc, rows[:4])
        predict_many = svc.rendezvous.predict_many

        def spy(records: Sequence[ev.Record], rows: Sequence[int] | None = None) -> Any:
            on_loop.append(threading.current_thread() is threading.main_thread())
            return predict_many(records, rows)

        svc.rendezvous.predict_many = spy  # type: ignore[method-assign]
        tasks = [asyncio.ensure_future(svc.predict([_record(r)])) for r in rows[4:7]]
        await asyncio.sleep(0)  # the tasks gather; their call comes at the next turn
        route = deploy(
            svc.log, "churn", spec=RouteSpec(champion="churn:1", shadow=["churn-shadow:1"])
        )
        svc.rendezvous.sync(wait=True)
        answers = [a for request in await asyncio.gather(*tasks) for a in request]
        return answers, route.version

    try:
        answers, version = asyncio.run(run())
    finally:
        svc.stop()
    assert on_loop == [False]
    assert [(a.status, a.route_version) for a in answers] == [("ok", version)] * 3
