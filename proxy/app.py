"""``create_app``: the Litestar application around a ``Gateway``."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import GatewayError
from proxy.gateway import Gateway
from proxy.http_errors import (
    STORE_OUTAGES,
    handle_gateway_error,
    handle_http_exception,
    handle_store_outage,
    handle_unexpected,
)
from proxy.overload import overload_middleware
from proxy.routes.admin import explain_policy, list_usage
from proxy.routes.health import healthz, readyz
from proxy.routes.lifecycle import compact_response, count_response_input_tokens
from proxy.routes.metrics import prometheus_metrics
from proxy.routes.models import list_models, retrieve_model
from proxy.routes.openapi import openapi_document
from proxy.routes.responses import (
    cancel_response,
    delete_response,
    list_input_items,
    responses_endpoint,
    retrieve_response,
)
from proxy.settings import Settings
from proxy.telemetry import bind_request_id, telemetry_middleware


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Put ``x-request-id`` on every reply, errors from routing included. An id is a random
    prefix drawn once per worker and a counter: unique without a system call per request."""
    prefix = b"req_" + os.urandom(8).hex().encode()
    counter = itertools.count()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = b"%s%08x" % (prefix, next(counter))
        bind_request_id(request_id)
        header = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware


def create_app(settings: Settings, *, config_path: Path | None = None) -> Litestar:
    """``config_path``: where ``settings`` came from, re-read when policies reload."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        gateway = await Gateway.start(settings, config_path=config_path)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.close()

    return Litestar(
        route_handlers=[responses_endpoint, retrieve_response, cancel_response, delete_response, list_input_items,
                        list_models, retrieve_model, healthz, readyz, list_usage, explain_policy,
                        compact_response, count_response_input_tokens,
                        prometheus_metrics, openapi_document],
        lifespan=[lifespan],
        middleware=[request_id_middleware, *telemetry_middleware(settings.telemetry),
                    overload_middleware(settings.listen.max_in_flight)],
        exception_handlers={GatewayError: handle_gateway_error, HTTPException: handle_http_exception,
                            **dict.fromkeys(STORE_OUTAGES, handle_store_outage), Exception: handle_unexpected},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the process's logging is the CLI's (JSON lines); Litestar's default would replace it
        debug=False,
    )
