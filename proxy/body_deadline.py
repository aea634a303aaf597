"""A deadline for a request's body, so a client that trickles it (slowloris) cannot hold a
connection and a handler for as long as it likes: past the deadline it gets 408 and its
connection is closed. uvicorn bounds neither headers nor body (its keep-alive timeout runs only
between requests): the headers are bounded below the application (``proxy/header_guard.py``),
the body here.

A client that leaves before its body is in gets ``ClientClosedRequest`` (499, logged at info)
rather than Litestar's "client disconnected prematurely" 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from proxy.errors import ClientClosedRequest, RequestTimeout

_CLOSE = (b"connection", b"close")


def body_deadline_middleware(timeout_s: float) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: the whole body must arrive within ``timeout_s`` of the headers."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            deadline = asyncio.get_running_loop().time() + timeout_s
            reading = True
            timed_out = False

            async def receive_in_time() -> ReceiveMessage:
                nonlocal reading, timed_out
                if not reading:  # after the body, only the disconnect is left to wait for
                    return await receive()
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    timed_out = True
                    raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} seconds.") from None
                if message["type"] == "http.disconnect":
                    raise ClientClosedRequest("The client closed the connection before sending the whole body.")
                reading = bool(message.get("more_body", False))
                return message

            async def send_closing_late(message: Message) -> None:
                # Kept open, the connection would be held by the rest of the late body: each byte
                # cancels uvicorn's keep-alive timer.
                if timed_out and message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), _CLOSE]
                await send(message)

            await app(scope, receive_in_time, send_closing_late)

        return middleware

    return wrap
