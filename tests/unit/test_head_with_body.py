"""``HeadWithBody``: a response's head goes out with the first body write, or alone at the end of
the event loop's pass; nothing is reordered, lost or written to a closed transport; through
uvicorn, an interim "100 Continue" still comes before the body is sent."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from proxy.head_with_body import HeadWithBody
from tests.gateway_server import TEAM_A_KEY, RunningGateway, gateway_settings, serve
from tests.spec_validation import validate_resource


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def _pass() -> None:
    """Let the loop run the callbacks scheduled so far."""
    await asyncio.sleep(0)


async def test_the_head_goes_out_with_the_body() -> None:
    transport = Recording()
    wrapped = HeadWithBody(transport, asyncio.get_running_loop())
    wrapped.write(b"HEAD")
    wrapped.write(b"BODY")
    wrapped.write(b"MORE")
    await _pass()
    assert transport.writes == [b"HEADBODY", b"MORE"]


async def test_a_head_whose_body_is_not_ready_goes_out_alone_at_the_end_of_the_pass() -> None:
    transport = Recording()
    wrapped = HeadWithBody(transport, asyncio.get_running_loop())
    wrapped.write(b"HEAD")
    assert transport.writes == []
    await _pass()
    assert transport.writes == [b"HEAD"]
    wrapped.write(b"FIRST EVENT")
    assert transport.writes == [b"HEAD", b"FIRST EVENT"]


async def test_closing_sends_what_was_held_first() -> None:
    transport = Recording()
    wrapped = HeadWithBody(transport, asyncio.get_running_loop())
    wrapped.write(b"HEAD")
    wrapped.close()
    await _pass()
    assert transport.writes == [b"HEAD"] and transport.closed and wrapped.is_closing()


async def test_nothing_is_written_once_the_connection_is_gone() -> None:
    transport = Recording()
    wrapped = HeadWithBody(transport, asyncio.get_running_loop())
    wrapped.write(b"HEAD")
    transport.close()  # the client left: uvicorn's protocol closed it
    await _pass()
    assert transport.writes == []


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with serve(gateway_settings(f"sqlite:///{tmp_path_factory.mktemp('hwb') / 'store.db'}")) as running:
        yield running


def test_through_uvicorn_a_100_continue_then_the_reply(gateway: RunningGateway) -> None:
    """The interim "100 Continue" is the cycle's first write here (held like a head, then sent
    alone), and the reply's head is its second."""
    body = json.dumps({"model": "sim", "input": "hi", "store": False}).encode()
    head = (b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TEAM_A_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK"
    validate_resource(json.loads(rest.partition(b"\r\n\r\n")[2]))
