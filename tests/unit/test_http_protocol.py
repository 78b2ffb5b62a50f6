"""serverctl.http_protocol: a step's writes leave in one write, in order, and none is lost."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from serverctl.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1234) if name == "peername" else default


async def _one_step() -> None:
    await asyncio.sleep(0)


def test_writes_in_one_step_leave_as_one_write_in_order() -> None:
    async def scenario() -> list[bytes]:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(memoryview(b"{}"))
        assert inner.writes == []  # kept until the end of this step
        assert transport.get_write_buffer_size() == 40
        await _one_step()
        transport.write(b"next")
        await _one_step()
        return inner.writes

    writes = asyncio.run(scenario())
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_sends_what_was_kept_first() -> None:
    async def scenario() -> RecordingTransport:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"last words")
        transport.close()
        await _one_step()
        return inner

    inner = asyncio.run(scenario())
    assert inner.writes == [b"last words"]
    assert inner.closed


def test_other_transport_calls_reach_the_real_transport() -> None:
    loop = asyncio.new_event_loop()
    try:
        transport = CoalescingTransport(RecordingTransport(), loop)
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
        assert transport.is_closing() is False
    finally:
        loop.close()


@pytest.fixture
def served_app() -> object:
    """A real uvicorn server on the coalescing protocol, as `serverctl serve` runs it."""
    answers: list[bytes] = [b"first", b"x" * 300_000]

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        body = answers[0] if scope["path"] == "/small" else answers[1]
        await send(  # type: ignore[operator]
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    return app


def test_real_server_answers_small_and_large_bodies_whole(served_app: object) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        served_app,  # type: ignore[arg-type]
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)

    async def scenario() -> list[bytes]:
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        bodies = []
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/small", "/large", "/small"):  # keep-alive: one connection, in order
            writer.write(f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            bodies.append(await reader.readexactly(length))
        writer.close()
        server.should_exit = True
        await task
        return bodies

    bodies = asyncio.run(scenario())
    assert bodies == [b"first", b"x" * 300_000, b"first"]
