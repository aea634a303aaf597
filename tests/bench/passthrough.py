"""The smallest correct Litestar + aiohttp proxy: the baseline the gateway's throughput is
compared with. It forwards the body to ``UPSTREAM`` and returns the reply unchanged; an SSE reply
is relayed chunk by chunk as it arrives, and its upstream connection is released when the client
goes away."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:18765/v1/responses")
_SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


@asynccontextmanager
async def _session(app: Litestar) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app.state.session = session
        yield


async def _relay(reply: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply.content.iter_any():
            yield chunk
    finally:
        reply.release()


@post("/v1/responses", status_code=200)
async def forward(request: Request) -> Response[bytes] | Stream:  # type: ignore[type-arg]
    session: aiohttp.ClientSession = request.app.state.session
    reply = await session.post(UPSTREAM, data=await request.body(), headers={"Content-Type": "application/json"})
    if reply.status == 200 and reply.content_type == "text/event-stream":
        return Stream(_relay(reply), media_type="text/event-stream", headers=_SSE_HEADERS)
    async with reply:
        body = await reply.read()
    return Response(body, status_code=reply.status, media_type=reply.content_type or "application/json")


app = Litestar([forward], lifespan=[_session], openapi_config=None)
