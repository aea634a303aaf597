"""A cap on the HTTP requests one worker serves at once (``listen.max_in_flight``), streams
included until their last byte: past it a request is answered at once with 503
``server_overloaded`` and ``retry-after``, never queued, so an overloaded worker keeps its memory
and latency bounded and clients back off or go to another replica.

Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) are never refused: an orchestrator
must not restart or unroute a worker for being busy. WebSocket connections are not counted.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

from proxy.errors import ServerError
from proxy.http_errors import error_response

RETRY_AFTER_S = 1.0
"""What a refused client is told to wait: in-flight requests of an LLM gateway end within
seconds, and a short wait spreads retries instead of synchronising them on a long one."""
_NEVER_REFUSED = frozenset({"/healthz", "/readyz", "/metrics"})


def overload_middleware(max_in_flight: int | None) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware refusing HTTP requests beyond ``max_in_flight`` at once (``None``: no cap).
    Litestar wraps each route in its own instance: they share one count, the worker's."""
    in_flight = 0

    def wrap(app: ASGIApp) -> ASGIApp:
        if max_in_flight is None:
            return app

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal in_flight
            if scope["type"] != "http" or scope["path"] in _NEVER_REFUSED:
                await app(scope, receive, send)
                return
            if in_flight >= max_in_flight:
                await _refuse(scope, receive, send, max_in_flight)
                return
            in_flight += 1
            try:
                await app(scope, receive, send)
            finally:
                in_flight -= 1

        return middleware

    return wrap


async def _refuse(scope: Scope, receive: Receive, send: Send, max_in_flight: int) -> None:
    # Not logged one by one: a burst of refusals would add log volume to an overloaded worker;
    # the request metrics count them by status.
    error = ServerError(f"The gateway is serving its maximum of {max_in_flight} requests at once; retry shortly.",
                        status=503, code="server_overloaded", retryable=True, retry_after=RETRY_AFTER_S)
    reply = error_response(error).to_asgi_response(None, Request(scope))
    await reply(scope, receive, send)
