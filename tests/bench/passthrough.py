"""The smallest correct Litestar + aiohttp proxy: the baseline the gateway's throughput is
compared with. It forwards the body to ``UPSTREAM`` and returns the reply unchanged."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from litestar import Litestar, Request, Response, post

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:18765/v1/responses")


@asynccontextmanager
async def _session(app: Litestar) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app.state.session = session
        yield


@post("/v1/responses", status_code=200)
async def forward(request: Request) -> Response[bytes]:  # type: ignore[type-arg]
    session: aiohttp.ClientSession = request.app.state.session
    async with session.post(UPSTREAM, data=await request.body(),
                            headers={"Content-Type": "application/json"}) as reply:
        body = await reply.read()
        return Response(body, status_code=reply.status, media_type="application/json")


app = Litestar([forward], lifespan=[_session], openapi_config=None)
