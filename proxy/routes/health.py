"""Liveness and readiness for load balancers and Kubernetes probes."""

from __future__ import annotations

from typing import cast

from litestar import Request, Response, get

from proxy.gateway import Gateway


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(b'{"status":"ok"}', media_type="application/json")


@get("/readyz")
async def readyz(request: Request) -> Response[bytes]:
    gateway = cast(Gateway | None, getattr(request.app.state, "gateway", None))
    if gateway is None or not await gateway.store.ping():
        return Response(b'{"status":"unavailable"}', status_code=503, media_type="application/json")
    return Response(b'{"status":"ready"}', media_type="application/json")
