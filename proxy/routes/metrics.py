"""``GET /metrics``: Prometheus text exposition (docs/observability.md lists the metrics).

Open to any caller, as scrapers and health endpoints usually are, unless
``telemetry.metrics_public`` is false: then an ``admin_keys`` key is required.
"""

from __future__ import annotations

from typing import cast

from litestar import Request, Response, get

from proxy.errors import NotFound
from proxy.gateway import Gateway
from proxy.routes.headers import authorization
from proxy.telemetry import CONTENT_TYPE, exposition


@get("/metrics")
async def prometheus_metrics(request: Request) -> Response[bytes]:
    gateway = cast(Gateway, request.app.state.gateway)
    config = gateway.settings.telemetry
    if not config.metrics:
        raise NotFound("Metrics are turned off on this gateway (telemetry.metrics).", code="metrics_disabled")
    if not config.metrics_public:
        gateway.authenticate_admin(authorization(request))
    # As a header, not a media type: Litestar would append a second ``charset`` to a text/ one,
    # which strict parsers (Prometheus's) refuse.
    return Response(exposition(), headers={"content-type": CONTENT_TYPE})
