"""The create route's plain ASGI replies: what ``SSEReply`` sends, and what it does when the
client goes away or the server cancels it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from proxy.routes.reply import JSONReply, SSEReply


class Client:
    """The ASGI side of one connection: what was sent, and a disconnect to deliver on demand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def bodies(self) -> list[bytes]:
        return [message["body"] for message in self.sent if message["type"] == "http.response.body"]


class Frames:
    """Frames that pause after ``pause_after`` of them, remembering whether they were closed."""

    def __init__(self, count: int, pause_after: int | None = None) -> None:
        self.count, self.pause_after = count, pause_after
        self.closed = False
        self.paused = asyncio.Event()

    async def __call__(self) -> AsyncGenerator[bytes, None]:
        try:
            for index in range(self.count):
                if index == self.pause_after:
                    self.paused.set()
                    await asyncio.Event().wait()
                yield b"data: %d\n\n" % index
        finally:
            self.closed = True


async def test_frames_then_the_end_with_the_headers_given() -> None:
    client, frames = Client(), Frames(3)
    await SSEReply(frames(), headers={"x-a": "1"})({}, client.receive, client.send)  # type: ignore[arg-type]
    start = client.sent[0]
    assert start["status"] == 200
    assert start["headers"] == [(b"x-a", b"1"), (b"content-type", b"text/event-stream; charset=utf-8")]
    assert client.bodies() == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert client.sent[-1]["more_body"] is False and frames.closed


async def test_a_client_that_leaves_ends_the_reply_quietly_and_closes_the_frames() -> None:
    client, frames = Client(), Frames(5, pause_after=2)
    replying = asyncio.create_task(SSEReply(frames(), headers={})({}, client.receive, client.send))  # type: ignore[arg-type]
    await frames.paused.wait()
    client.gone.set()
    await asyncio.wait_for(replying, 5)  # no CancelledError: the leaving is the client's
    assert client.bodies() == [b"data: 0\n\n", b"data: 1\n\n"] and frames.closed
    assert replying.cancelling() == 0


async def test_the_servers_cancellation_still_cancels() -> None:
    client, frames = Client(), Frames(5, pause_after=1)
    replying = asyncio.create_task(SSEReply(frames(), headers={})({}, client.receive, client.send))  # type: ignore[arg-type]
    await frames.paused.wait()
    replying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await replying
    assert frames.closed


async def test_json_reply_sends_the_body_with_its_length() -> None:
    client = Client()
    await JSONReply(b'{"a":1}', headers={"x-b": "2"})({}, client.receive, client.send)  # type: ignore[arg-type]
    assert client.sent[0]["headers"] == [(b"x-b", b"2"), (b"content-type", b"application/json"),
                                         (b"content-length", b"7")]
    assert client.bodies() == [b'{"a":1}'] and client.sent[1]["more_body"] is False
