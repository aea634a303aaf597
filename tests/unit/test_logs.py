"""JSON logs: one object a line with the request id and trace id of the request that logged,
and no secret in them, whether it has a known value or a key's shape."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from proxy.telemetry.logs import (
    JsonFormatter,
    TextFormatter,
    bind_request_id,
    protect_secrets,
    redact,
    redact_library_records,
)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("interlock.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def no_protected_secrets() -> Iterator[None]:
    yield
    protect_secrets(())


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_each_line_is_an_object_with_the_request_id_of_its_own_task(
        logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged

    async def request(request_id: bytes) -> None:
        bind_request_id(request_id)
        await asyncio.sleep(0)  # interleave the two requests
        logger.warning("upstream %s failed", "sim", extra={"deployment": "sim#0:sim/sim-1"})

    await asyncio.gather(request(b"req_one"), request(b"req_two"))
    logger.info("outside any request")
    first, second, outside = _lines(out)
    assert {first["request_id"], second["request_id"]} == {"req_one", "req_two"}
    assert first["message"] == "upstream sim failed" and first["level"] == "WARNING"
    assert first["logger"] == "interlock.test-logs" and first["deployment"] == "sim#0:sim/sim-1"
    assert first["ts"].endswith("+00:00")
    assert "request_id" not in outside and "trace_id" not in outside


def test_lines_name_the_current_span(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("work") as span:
        logger.info("inside")
    provider.shutdown()
    (entry,) = _lines(out)
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")


def test_secrets_are_replaced_in_messages_extras_and_tracebacks(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    protect_secrets(["provider-secret-value-123", "short", None])
    logger.info("calling with Authorization: Bearer sk-team-key-abcdef and api-key: azure-key-9876",
                extra={"header": "x-api-key=anthropic-secret-42"})
    try:
        raise RuntimeError("upstream said: invalid key provider-secret-value-123")
    except RuntimeError:
        logger.exception("failed")
    text = out.getvalue()
    for secret in ("sk-team-key-abcdef", "azure-key-9876", "anthropic-secret-42", "provider-secret-value-123"):
        assert secret not in text
    said, failed = _lines(out)
    assert said["message"] == "calling with Authorization: Bearer [redacted] and api-key: [redacted]"
    assert said["header"] == "x-api-key=[redacted]"
    assert "RuntimeError: upstream said: invalid key [redacted]" in failed["exception"]


def test_redaction_leaves_ordinary_text_alone() -> None:
    protect_secrets(["short"])
    text = "model sim is short of deployments; api_key_env: OPENAI_API_KEY is unset"
    assert redact(text) == text
    assert redact("key sk-live-0123456789") == "key [redacted]"


def test_the_text_format_is_redacted_too() -> None:
    record = logging.makeLogRecord({"name": "interlock", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "sent %s", "args": ("Bearer abc.def-ghi",)})
    assert TextFormatter().format(record).endswith("INFO interlock sent Bearer [redacted]")


def test_a_handshake_header_reaches_every_handler_redacted() -> None:
    """websockets, under uvicorn, logs each handshake header to ``uvicorn.error`` at debug."""
    raw = logging.StreamHandler(io.StringIO())  # a handler without the gateway's formatters
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(raw)
    level = uvicorn_error.level
    uvicorn_error.setLevel(logging.DEBUG)
    try:
        redact_library_records()
        uvicorn_error.debug("< %s: %s", "authorization", "Bearer sk-team-key-abcdef")
    finally:
        uvicorn_error.removeHandler(raw)
        uvicorn_error.setLevel(level)
    assert raw.stream.getvalue() == "< authorization: Bearer [redacted]\n"


def test_the_cli_configuration_writes_uvicorn_logs_as_json() -> None:
    """As ``interlock serve`` configures each worker: uvicorn's own loggers go through it."""
    script = ("from proxy.telemetry.logs import configure_logging\n"
              "import logging\n"
              "configure_logging('info', 'json')\n"
              "logging.getLogger('uvicorn.error').info('Started server process', extra={'color_message': 'x'})\n"
              "logging.getLogger('interlock.engine').debug('not at info')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    (line,) = done.stderr.splitlines()
    assert json.loads(line) | {"ts": None} == {"ts": None, "level": "INFO", "logger": "uvicorn.error",
                                                "message": "Started server process"}
