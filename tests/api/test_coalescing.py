"""``eventml serve``'s transport: a response's head and body leave in one write, over a real
socket; a write nothing follows leaves at the loop's next turn; closing sends what is held."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from eventml.api.server import CoalescingHttp, _Coalescing
from tests.api.conftest import Server


def test_head_and_body_leave_in_one_write() -> None:
    sent: list[bytes] = []
    checks: list[list[bytes]] = []

    async def main() -> bytes:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            transport = writer.transport
            write = transport.write

            def counted(data: bytes | bytearray | memoryview) -> None:
                sent.append(bytes(data))
                write(data)

            transport.write = counted  # type: ignore[method-assign]
            out = _Coalescing(transport)  # type: ignore[arg-type]
            out.write(b"HTTP/1.1 200 OK\r\n\r\n")
            checks.append(list(sent))  # the head waits for the body
            out.write(b"body")
            checks.append(list(sent))
            out.write(b"alone")
            checks.append(list(sent))
            await asyncio.sleep(0)  # the loop's next turn
            checks.append(list(sent))
            out.write(b"last")
            out.close()
            checks.append(list(sent))
            ready.set_result(None)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        received = await reader.read()  # until the server closes
        await ready
        writer.close()
        server.close()
        await server.wait_closed()
        return received

    received = asyncio.run(main())
    head = b"HTTP/1.1 200 OK\r\n\r\n"
    assert checks == [
        [],
        [head + b"body"],
        [head + b"body"],
        [head + b"body", b"alone"],
        [head + b"body", b"alone", b"last"],
    ]
    assert received == head + b"bodyalonelast"


def test_the_server_answers_through_it(make_server: Callable[..., Server]) -> None:
    """The API's uvicorn (the tests' servers run eventml serve's config) uses the transport."""
    server = make_server(auth=False)
    with httpx.Client(base_url=server.url) as client:  # one kept-alive connection
        r = client.get("/v2/health/live")
        assert (r.status_code, r.json()) == (200, {"live": True})
        (protocol,) = server.uv.server_state.connections
        assert isinstance(protocol, CoalescingHttp)
        assert isinstance(protocol.transport, _Coalescing)
        r = client.get("/v2/health/live")
        assert (r.status_code, r.json()) == (200, {"live": True})
