"""Every error leaves the gateway as the Open Responses envelope with the right status and the
retry hints clients read (``retry-after``, ``x-should-retry``); nothing internal leaks."""

from __future__ import annotations

import logging
import math

from litestar import Request, Response
from litestar.exceptions import HTTPException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.errors import GatewayError, ServerError
from proxy.schema.codec import encode
from proxy.schema.response import ErrorBody, ErrorObject

log = logging.getLogger("interlock.http")

_TYPE_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                   415: "invalid_request_error", 429: "rate_limit_error"}
_CODE_BY_STATUS = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                   415: "unsupported_media_type", 429: "rate_limit_exceeded"}


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response[bytes]:
    """``headers``: more to send, such as the ``allow`` of a 405."""
    body = ErrorBody(error=ErrorObject(message=error.message, type=error.type, param=error.param, code=error.code))
    headers = {**(headers or {}), "x-should-retry": "true" if error.retryable else "false"}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(int(error.retry_after * 1000))
    return Response(encode(body), status_code=error.status, media_type="application/json", headers=headers)


def handle_gateway_error(_: Request, exc: GatewayError) -> Response[bytes]:
    log.log(exc.log_level, "%s %s: %s", exc.status, exc.code, exc.message)
    return error_response(exc)


def handle_http_exception(_: Request, exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return handle_unexpected(_, exc)
    error = GatewayError(str(exc.detail), status=status, code=_CODE_BY_STATUS.get(status, "invalid_request"),
                         retryable=status == 429)
    error.type = _TYPE_BY_STATUS.get(status, "invalid_request_error")
    return error_response(error, exc.headers)


STORE_OUTAGES: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
"""What a request meets while Redis, its response store and job queue, is down, slow or failing over."""


def handle_store_outage(_: Request, exc: Exception) -> Response[bytes]:
    """503 with a retry hint, as the limits answer when the same Redis is away: not the caller's
    fault, and over within seconds when Redis restarts or fails over."""
    log.warning("the response store is unreachable: %s", exc)
    return error_response(ServerError("The response store is unreachable right now; retry shortly.", status=503,
                                      code="store_unavailable", retryable=True, retry_after=1.0))


def handle_unexpected(_: Request, exc: Exception) -> Response[bytes]:
    log.exception("unexpected error", exc_info=exc)
    return error_response(ServerError("The gateway had an internal error; it has been logged.", retryable=True))
