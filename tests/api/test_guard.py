"""The guard's timeouts, called as an ASGI app: one timer for every request's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventml.api._service import ApiOptions, Service
from eventml.api.app import Guard
from eventml.api.metrics import Metrics
from eventml.config import Settings
from eventml.log import open_log

LATE = b'{"error":"expected an answer within 0.2 s, got none in time"}'


async def _slow_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(0 if scope["path"] == "/fast" else 5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[Guard]:
    with open_log(str(tmp_path / "log")) as log:
        yield Guard(_slow_app, Service(log, Settings(), ApiOptions(timeout_s=0.2), Metrics()))


async def _call(guard: Guard, path: str = "/slow") -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    await guard(scope, receive, send)
    return sent


def test_each_event_loop_gets_its_own_timer(guard: Guard) -> None:
    """A guard reused on a second loop (an embedding app, a test client) still times out."""
    fast = asyncio.run(_call(guard, "/fast"))  # its loop ends with the timer still set
    assert (fast[0]["status"], fast[1]["body"]) == (200, b"{}")
    for _ in range(2):
        sent = asyncio.run(_call(guard))
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert (sent[0]["status"], sent[1]["body"]) == (503, LATE)
    assert guard.service.in_flight == 0
    assert len(guard._running) == 0


def test_a_cancel_that_is_not_the_timers_is_kept(guard: Guard) -> None:
    """Cancelled by its timeout and by someone else (a shutdown) in the same turn: the
    request ends cancelled, as asyncio.timeout would leave it, instead of answering 503."""

    async def main() -> tuple[bool, list[Any]]:
        loop = asyncio.get_running_loop()
        sent: list[Any] = []

        async def call() -> None:
            sent.extend(await _call(guard))

        task = loop.create_task(call())
        await asyncio.sleep(0.01)
        (running,) = guard._running
        loop.call_at(running.deadline, task.cancel)  # due with the guard's timer
        try:
            await task
        except asyncio.CancelledError:
            return True, sent
        return False, sent

    cancelled, sent = asyncio.run(main())
    assert (cancelled, sent) == (True, [])
    assert guard.service.in_flight == 0
