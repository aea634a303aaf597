"""Structured logs: one JSON object a line, with the request id and trace id of the request
that logged it, and secrets replaced before anything is written.

    configure_logging("info", "json")          # the CLI, once per process
    uvicorn.run(..., log_config=log_config("info", "json"))   # and in every worker it spawns
    protect_secrets(values)                    # the gateway, once it knows its secrets
    redact_library_records()                   # and the libraries' records that carry credentials
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from opentelemetry import trace

LogFormat = Literal["json", "text"]

_REQUEST_ID: ContextVar[bytes | None] = ContextVar("interlock_request_id", default=None)
_SECRET_SHAPES = re.compile(r"(?i)(bearer\s+|api[-_]key[\"']?\s*[:=]\s*[\"']?)[^\s\"'\\,;]+|\bsk-[A-Za-z0-9_\-]{6,}")
"""Credentials by their shape: an ``Authorization``/``api-key`` value, an ``sk-`` key."""
_REDACTED = "[redacted]"
_MIN_SECRET = 8
"""Shorter configured values are not searched for: they would blank out ordinary words."""
_secrets: tuple[str, ...] = ()
_json_encode = msgspec.json.Encoder(enc_hook=str).encode
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}
"""Attributes every record has (and uvicorn's terminal-coloured copy of its message): not extras."""


def bind_request_id(request_id: bytes) -> None:
    """Whatever the running request logs from now on carries ``request_id`` (each ASGI request
    runs in a task with a context of its own, which the tasks it starts inherit)."""
    _REQUEST_ID.set(request_id)


def current_request_id() -> str | None:
    request_id = _REQUEST_ID.get()
    return request_id.decode() if request_id is not None else None


def protect_secrets(values: Iterable[str | None]) -> None:
    """Replace these exact values (provider keys, the sealing key...) wherever they would be
    logged, on top of what ``redact`` finds by shape."""
    global _secrets
    _secrets = tuple(sorted({value for value in values if value and len(value) >= _MIN_SECRET}, key=len,
                            reverse=True))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return _SECRET_SHAPES.sub(lambda match: (match.group(1) or "") + _REDACTED, text)


class _RedactedInPlace(logging.Filter):
    """Redacts a record's message itself, before any handler gets it (the gateway's formatters
    redact only what they write; an exporter or another handler gets the record as it is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the message: left to the handlers
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTED_IN_PLACE = _RedactedInPlace()
_CREDENTIAL_LOGGERS = ("uvicorn.error",)
"""Loggers a library writes credentials to: at debug, the websockets handshake under uvicorn logs
every request header, ``Authorization`` included, to ``uvicorn.error``."""


def redact_library_records() -> None:
    """Redact the records of ``_CREDENTIAL_LOGGERS`` in place (once per process is enough)."""
    for name in _CREDENTIAL_LOGGERS:
        logging.getLogger(name).addFilter(_REDACTED_IN_PLACE)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id"?, "trace_id"?, "span_id"?,
    "exception"?, ...extra}``: fields given with ``extra=`` are kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id.decode()
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        return redact(_json_encode(entry).decode())


class TextFormatter(logging.Formatter):
    """The classic one-line format, for a terminal; redacted the same way."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the whole process: the root logger writes to stderr
    in ``fmt``, and uvicorn's loggers go through it instead of their own handlers."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    through_root = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"interlock": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "interlock",
                                "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": through_root, "uvicorn.error": through_root, "uvicorn.access": through_root},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure_logging(level: str, fmt: LogFormat) -> None:
    logging.config.dictConfig(log_config(level, fmt))
