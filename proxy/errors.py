"""The gateway's error hierarchy. Every error knows its HTTP status, its Open Responses ``type``
and ``code``, the ``param`` it concerns, whether a retry may help, and how loudly to log it.

    GatewayError
    ├── InvalidRequest          400 invalid_request_error
    │   ├── UnsupportedFeature  400 a provider dialect cannot honour a feature
    │   └── ContextTooLong      400 context_length_exceeded
    ├── AuthenticationFailed    401 authentication_error
    ├── PermissionDenied        403 permission_error
    ├── NotFound                404 not_found_error
    ├── RequestTimeout          408 invalid_request_error   the body did not arrive in time
    ├── PayloadTooLarge         413 invalid_request_error
    ├── UnsupportedMediaType    415 invalid_request_error
    ├── RateLimited             429 rate_limit_error        (retryable)
    ├── ClientClosedRequest     499 invalid_request_error   the client left before its body was read
    ├── ServerError             500 server_error
    └── UpstreamError           502 upstream_error          (retryable unless the upstream said 4xx)
        ├── UpstreamTimeout     504 timeout                 (retryable)
        └── UpstreamUnavailable 503 service_unavailable     (retryable)
"""

from __future__ import annotations

import logging


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = "server_error"
    retryable: bool = False
    log_level: int = logging.ERROR

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    log_level = logging.INFO


class UnsupportedFeature(InvalidRequest):
    code = "unsupported_feature"


class ContextTooLong(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    log_level = logging.INFO


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"
    log_level = logging.INFO


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"
    log_level = logging.INFO


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    log_level = logging.INFO


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"
    log_level = logging.INFO


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"
    log_level = logging.INFO


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True
    log_level = logging.WARNING


class ClientClosedRequest(GatewayError):
    """No one reads the reply; the status (nginx's) keeps the request out of the server errors."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"
    log_level = logging.INFO


class ServerError(GatewayError):
    pass


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True
    log_level = logging.WARNING


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status = 503
    type = "service_unavailable"
    code = "upstream_unavailable"


def error_for_upstream_status(status: int, message: str, *, code: str | None = None,
                              param: str | None = None, retry_after: float | None = None,
                              same_dialect: bool = False) -> GatewayError:
    """The gateway error an upstream HTTP status maps to; used by every adapter's error mapper.

    Client errors the upstream reports about the request keep their status so the caller sees
    what it did wrong; credentials the gateway holds are the gateway's problem, not the caller's.
    An upstream ``param`` names a field of the native request, not of the caller's, so only a
    model error keeps one (``model``) unless the upstream speaks the caller's own dialect
    (``same_dialect``), where its ``param`` is the caller's field.
    """
    if status == 429:
        return RateLimited(message, code=code or "rate_limit_exceeded", retry_after=retry_after)
    if status in (401, 403):
        return UpstreamError(f"the upstream refused the gateway's credentials: {message}",
                             code="upstream_auth_failed", retryable=False)
    if status == 404:
        return InvalidRequest(message, code=code or "model_not_found", param="model")
    if status == 413:
        return PayloadTooLarge(message, code=code)
    if 400 <= status < 500:
        kept = param if same_dialect else None
        return InvalidRequest(message, code=code, param="model" if code == "model_not_found" else kept)
    if status in (503, 529):
        return UpstreamUnavailable(message, retry_after=retry_after)
    if status == 504:
        return UpstreamTimeout(message)
    return UpstreamError(message, retry_after=retry_after)
