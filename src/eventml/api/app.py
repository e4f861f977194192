"""The HTTP API as one Starlette app: :func:`create_app`.

Routes: the Open Inference Protocol v2 (:mod:`eventml.api.oip`), the native JSON API
(:mod:`eventml.api.native`), ``/openapi.json`` (:mod:`eventml.api.openapi`).

Every request passes :class:`Guard` first: at most ``max_in_flight`` requests are served
at once (more are answered 429 with ``Retry-After`` at once, so memory stays bounded),
bodies over the limit are refused with 413 (64 MiB for ``POST /api/models``, 8 MiB
otherwise; checked on ``Content-Length`` and again while reading), a request that takes
longer than ``timeout_s`` is answered 503, and each answer is counted in the Prometheus
metrics by route template. Errors are ``{"error": "..."}`` with the status the eventml
error carries (4xx for bad input); an unknown path or method is 404 / 405.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventml.api import native, oip
from eventml.api._http import error, error_response, json
from eventml.api._service import ApiOptions, Service
from eventml.api.auth import TokenStore
from eventml.api.metrics import Metrics
from eventml.api.openapi import document
from eventml.config import Settings
from eventml.log import Log

_EXEMPT = ("/v2/health/live", "/v2/health/ready")


class Guard:
    """Concurrency limit, body size limit, timeout and metrics around the app.

    It is the outermost layer (:class:`_App` calls it before Starlette's own middleware),
    so every answer is counted, a 500 from Starlette's error middleware included. The
    scoring routes (``hot``: inference and native predict, which no other route shadows)
    are called from here directly when a POST matches them, as the router would, but
    without the router's walk over every route and Starlette's middleware: their handlers
    turn every error into an answer themselves (:func:`~eventml.api._http.needs`), and
    what escapes them is answered 500 here.

    Timeouts: every request's deadline is ``timeout_s`` after it starts, so deadlines come
    in the order requests start. One timer, set for the oldest request not yet known to be
    done (finished ones are dropped from the front as they finish), cancels what is past
    its deadline (answered 503) and is set again for the next. ``asyncio.timeout`` would
    schedule and cancel a timer of its own for every request.
    """

    def __init__(self, app: ASGIApp, service: Service, hot: Sequence[Route] = ()) -> None:
        self.app = app
        self.service = service
        self.options = service.options
        self.metrics = service.metrics
        self.hot = tuple(hot)
        self._running: deque[_Running] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path: str = scope["path"]
        try:
            refusal = self._refuse(scope, path)
            if refusal is not None:
                await refusal(scope, receive, sending)
                return
            self.service.in_flight += 1
            running = self._track()
            try:
                route = self._hot(scope) if scope["method"] == "POST" else None
                if route is None:
                    await self.app(scope, receive, sending)
                else:
                    try:
                        response = await route.endpoint(Request(scope, receive))
                        await response(scope, receive, sending)
                    except Exception as exc:
                        if status[0] == 0:
                            await error_response(exc)(scope, receive, sending)
                        raise
            except asyncio.CancelledError:
                # ours alone (the timer's): answer 503; anyone else's (a shutdown) goes on
                if not running.late or running.task is None or running.task.uncancel() > 0:
                    raise
                if status[0] == 0:
                    msg = f"expected an answer within {self.options.timeout_s} s, got none in time"
                    await error(msg, 503, {"Retry-After": "1"})(scope, receive, sending)
            finally:
                running.task = None
                self._settle()
                self.service.in_flight -= 1
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status[0], time.perf_counter() - start)

    def _track(self) -> _Running:
        loop = asyncio.get_running_loop()
        running = _Running(loop.time() + self.options.timeout_s, asyncio.current_task())
        self._running.append(running)
        if self._timer is None or self._timer_loop is not loop:  # none yet, or a loop now gone
            self._timer = loop.call_at(running.deadline, self._expire)
            self._timer_loop = loop
        return running

    def _settle(self) -> None:
        """Forget finished requests at the front (they finish roughly in start order)."""
        running = self._running
        while running and running[0].task is None:
            running.popleft()

    def _expire(self) -> None:
        """The timer: cancel each request past its deadline, then wait for the next one."""
        self._timer = None
        self._settle()
        loop = asyncio.get_running_loop()
        now = loop.time()
        running = self._running
        while running and running[0].deadline <= now:
            late = running.popleft()
            if late.task is not None:
                late.late = True
                late.task.cancel()
        self._settle()
        if running:
            self._timer = loop.call_at(running[0].deadline, self._expire)

    def _hot(self, scope: Scope) -> Route | None:
        for route in self.hot:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child)
                return route
        return None

    def _refuse(self, scope: Scope, path: str) -> Response | None:
        if self.service.in_flight >= self.options.max_in_flight and path not in _EXEMPT:
            self.metrics.overload.inc()
            return error(
                f"expected at most {self.options.max_in_flight} requests in flight, got more: "
                "retry later",
                429,
                {"Retry-After": "1"},
            )
        limit = self.options.max_upload if path == "/api/models" else self.options.max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    return error(f"expected a numeric Content-Length, got {value!r}", 400)
                if int(value) > limit:
                    return error(f"expected a body of at most {limit} bytes, got {int(value)}", 413)
        return None


@dataclass(slots=True)
class _Running:
    """A request in flight: when it must be answered by, and its task (None once done)."""

    deadline: float
    task: asyncio.Task[Any] | None
    late: bool = False


class _App(Starlette):
    """Starlette with :class:`Guard` outside its middleware stack (see :class:`Guard`)."""

    guard: Guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self.guard(scope, receive, send)

    async def _stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's own entry: its middleware, then the router."""
        await super().__call__(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        text = {404: "expected a known path", 405: f"expected another method than {request.method}"}
        message = text.get(exc.status_code, exc.detail)
        return error(
            f"{message}, got {request.method} {request.url.path}",
            exc.status_code,
            dict(exc.headers or {}),
        )
    return error(f"internal error: {type(exc).__name__}", 500)


async def _openapi(request: Request) -> Response:
    return json(document())


def create_app(
    log: Log,
    settings: Settings,
    auth: TokenStore | None = None,
    options: ApiOptions | None = None,
) -> Starlette:
    """The API over ``log``; ``auth=None`` serves without tokens (``--no-auth``)."""
    opts = options or ApiOptions()
    metrics = Metrics()
    svc = Service(log, settings, opts, metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(svc.start)
        if opts.freeze_gc:
            gc.collect()
            gc.freeze()  # models and views loaded at start: never walked by the collector again
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(svc.stop)

    routes: list[Any] = [
        *oip.routes(),
        *native.routes(),
        Route("/openapi.json", _openapi, methods=["GET"]),
    ]
    app = _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
    app.state.service = svc
    app.state.auth = auth
    hot = [r for r in routes if isinstance(r, Route) and r.endpoint in (oip.infer, native.predict)]
    app.guard = Guard(app._stack, svc, hot=hot)
    metrics.in_flight.set_function(lambda: svc.in_flight)
    return app
