"""HTTP plumbing shared by the handlers: JSON answers, errors, roles, bounded bodies."""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from eventml.api._service import Service
from eventml.api.auth import Forbidden, Role, TokenStore, allows
from eventml.errors import EventmlError, InputError

_log = logging.getLogger("eventml.api")
_encoder = msgspec.json.Encoder()

Handler = Callable[[Request], Awaitable[Response]]


class TooLarge(EventmlError):
    """A request body over the size limit (413)."""

    status_code = 413


class NotReady(EventmlError):
    """Something that exists but cannot answer yet (503)."""

    status_code = 503


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(data), status, headers, media_type="application/json")


def error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json({"error": message}, status, headers)


def error_response(exc: BaseException) -> Response:
    """One place maps exceptions to ``{"error": ...}`` and a status (never a traceback)."""
    if isinstance(exc, EventmlError):
        status = exc.status_code if exc.status_code != 500 else 503
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error(str(exc), status, headers)
    _log.exception("unexpected error", exc_info=exc)
    return error(f"internal error: {type(exc).__name__}", 500)


def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


def needs(role: Role | None) -> Callable[[Handler], Handler]:
    """A handler that checks the caller's role first (None: open to anyone)."""

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def endpoint(request: Request) -> Response:
            try:
                auth: TokenStore | None = request.app.state.auth
                if role is not None and auth is not None:
                    have = auth.role_of(request.headers.get("authorization"))
                    if not allows(have, role):
                        raise Forbidden(f"expected a token with role {role!r}, got role {have!r}")
                return await fn(request)
            except Exception as exc:  # every error becomes {"error": ...}
                return error_response(exc)

        endpoint.role = role  # type: ignore[attr-defined]
        return endpoint

    return wrap


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes (413), inflated when gzip/deflate encoded."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"expected a body of at most {limit} bytes, got {declared}")
    chunks: list[bytes] = []
    size = 0
    while True:  # the ASGI messages themselves: Request.stream() costs more than a small body
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"expected a body of at most {limit} bytes, got more")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InputError(f"expected a {encoding} body, got {exc}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise TooLarge(f"expected a body of at most {limit} bytes once inflated, got more")
    elif encoding != "identity":
        raise InputError(f"expected Content-Encoding gzip, deflate or none, got {encoding!r}")
    return body


def decode_json(body: bytes, where: str = "request body") -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InputError(f"expected JSON, got {exc}", where=where) from None


def int_param(request: Request, name: str) -> int:
    text = request.path_params[name]
    if not text.isdigit() or int(text) < 1 or len(text) > 18:
        raise InputError(f"expected {name} to be a positive integer, got {text!r}")
    return int(text)
