"""``eventml serve``: the HTTP API and the stream engine in one process, on one log.

:func:`serve` runs uvicorn (one worker: the embedded log and the in-process rendezvous
live in this process) on 127.0.0.1 by default. SIGTERM and SIGINT stop it gracefully:
uvicorn stops accepting connections and finishes the requests in flight (at most
``graceful_s``), then the app's lifespan ends, which writes every queued answer to the log
(the group-commit writer flushes), stops the engine after its current micro-batch and
closes the log.

The event loop is asyncio's own, not uvloop: under saturation (64 clients, 2 cores)
uvloop served some connections far later than others (p99 1.2 s against a p50 of 55 ms),
asyncio's loop keeps them in order (p99 within 1.3x of p50). Once the app has started,
the objects it loaded are moved out of the garbage collector's sight (``gc.freeze``), so
collections walk only what requests create. uvicorn's proxy-header middleware is off:
nothing here reads the client's address, and it cost a layer on every request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from eventml.api._service import ApiOptions
from eventml.api.app import create_app
from eventml.api.auth import TokenStore
from eventml.config import Settings
from eventml.log import open_log


def serve(
    data: str | None,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    auth: TokenStore | None,
    options: ApiOptions,
    graceful_s: float = 10.0,
    log_level: str = "warning",
) -> None:
    """Serve until SIGTERM or SIGINT; returns once the log is flushed and closed."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    gc.set_threshold(20_000, 50, 100)  # few cycles here: collect young objects less often
    with open_log(data, settings) as log:
        app = create_app(log, settings, auth=auth, options=options)
        config = uvicorn_config(
            app, options, host=host, port=port, log_level=log_level, graceful_s=graceful_s
        )
        server = uvicorn.Server(config)
        # uvicorn re-raises the signal it stopped on once it has shut down; with these
        # handlers in place that is a no-op, so a graceful stop exits with status 0
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not server.started:
            raise SystemExit(1)


def uvicorn_config(
    app: Any,
    options: ApiOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "warning",
    graceful_s: float = 10.0,
) -> uvicorn.Config:
    """How ``eventml serve`` runs uvicorn (the tests' servers run the same).

    uvicorn's own connection limit (answered with a plain-text 503) sits well above the
    requests served at once, whose excess the app answers 429 with ``{"error": ...}``.
    """
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=round(graceful_s), timeout_keep_alive=30,
        limit_concurrency=max(options.max_in_flight * 4, 1024), lifespan="on",
        h11_max_incomplete_event_size=64 * 1024, loop="asyncio", proxy_headers=False,
        http=CoalescingHttp,
    )  # fmt: skip


class CoalescingHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, a response's head sent with its body in one write.

    uvicorn writes a response's status line and headers, then its body, each with a
    ``send()`` of its own: two system calls and two packets for every small answer, which
    took a fifth of the event loop's time at 64 clients (py-spy). Written by hand because
    neither uvicorn nor asyncio (before Python 3.12's ``writelines``) joins them.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Coalescing(transport))  # type: ignore[arg-type]


class _Coalescing:
    """A transport that holds a write until the next one (a response's body after its
    head), then sends both as one; a write that none follows is sent at the loop's next turn.
    """

    __slots__ = ("_held", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._loop = asyncio.get_running_loop()
        self._scheduled = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
            return
        self._held = data
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _stopped(signum: int, frame: Any) -> None:
    """A signal arriving after uvicorn restored the handlers: the stop is already done."""
