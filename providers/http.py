"""Shared upstream HTTP plumbing: one aiohttp session per worker, timeouts, and stream framing.

Byte chunks from the socket never line up with events, so the parsers buffer and split on the
framing itself (blank lines for SSE, newlines for NDJSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
import msgspec

from providers.base import PreparedCall
from proxy.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from proxy.schema.deltas import Delta
from proxy.schema.upstream import Deployment

_json_encode = msgspec.json.Encoder().encode
ErrorMapper = Callable[[int, Mapping[str, str], bytes], GatewayError]
MAX_MESSAGE = 2000
"""The most characters of an upstream error message that travel on to the caller."""


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """The worker's upstream session: keep-alive pool, no per-request client construction."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, raise_for_status=False,
                                 skip_auto_headers=("User-Agent",))


def auth_headers(deployment: Deployment) -> dict[str, str]:
    """The upstream credential header, by the catalogue's auth style. The caller's own key is
    never forwarded: only the deployment's."""
    headers = dict(deployment.headers)
    key = deployment.api_key
    if key:
        if deployment.auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif deployment.auth == "api-key":
            headers["api-key"] = key
        elif deployment.auth == "x-api-key":
            headers["x-api-key"] = key
    headers["Content-Type"] = "application/json"
    return headers


def join_url(base_url: str, path: str, query: Mapping[str, str] | None = None) -> str:
    url = base_url.rstrip("/") + path
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            return max(float(value) / 1000.0, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(moment.timestamp() - time.time(), 0.0)


async def send(session: aiohttp.ClientSession, call: PreparedCall, deployment: Deployment,
               map_error: ErrorMapper) -> aiohttp.ClientResponse:
    """Send ``call`` and return the response once its headers arrived with a 2xx status.

    Non-2xx replies are read (bounded) and mapped by the adapter's ``map_error``; transport
    failures become retryable upstream errors. Nothing here logs the request headers.
    """
    timeouts = deployment.timeouts
    timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.idle)
    try:
        async with asyncio.timeout(timeouts.first_byte):
            response = await session.request(call.method, call.url, data=_json_encode(call.body),
                                             headers=call.headers, timeout=timeout)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{deployment.provider} did not answer within {timeouts.first_byte:g}s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"could not connect to {deployment.provider}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{deployment.provider} connection failed: {type(exc).__name__}") from exc
    if response.status >= 300:
        try:
            body = await response.content.read(65536)
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            response.release()
        raise map_error(response.status, response.headers, body)
    return response


async def read_body(response: aiohttp.ClientResponse, provider: str) -> bytes:
    try:
        return await response.read()
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{provider} stalled while sending its reply") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{provider} reply was cut: {type(exc).__name__}") from exc
    finally:
        response.release()


async def read_json(response: aiohttp.ClientResponse, provider: str) -> tuple[bytes, Mapping[str, Any]]:
    """A whole reply: its bytes and the JSON object they hold (anything else is an upstream error)."""
    raw = await read_body(response, provider)
    reply = decode_json(raw, provider)
    if not isinstance(reply, Mapping):
        raise UpstreamError(f"{provider} sent an unexpected reply")
    return raw, reply


@contextlib.contextmanager
def stream_errors(response: aiohttp.ClientResponse, provider: str) -> Iterator[None]:
    """Around the reading of a streamed reply: a stall or a cut becomes the gateway's upstream
    error, and the connection is closed however reading ends (the consumer may stop early when
    the client went away)."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{provider} stream stalled") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{provider} stream was cut: {type(exc).__name__}") from exc
    finally:
        response.close()


async def iter_sse(response: aiohttp.ClientResponse, provider: str) -> AsyncIterator[tuple[str | None, bytes]]:
    """Yield ``(event, data)`` per SSE event; comments and keep-alives are skipped.

    Closes the upstream connection when the consumer stops early (client went away)."""
    buffer = b""
    with stream_errors(response, provider):
        async for chunk in response.content.iter_any():
            buffer += chunk
            while True:
                end, sep_len = _find_event_end(buffer)
                if end < 0:
                    break
                block, buffer = buffer[:end], buffer[end + sep_len:]
                parsed = _parse_sse_block(block)
                if parsed is not None:
                    yield parsed
        if buffer.strip():
            parsed = _parse_sse_block(buffer)
            if parsed is not None:
                yield parsed


async def iter_ndjson(response: aiohttp.ClientResponse, provider: str) -> AsyncGenerator[bytes, None]:
    """Yield the non-blank lines of an NDJSON body; closes the connection when done or dropped."""
    buffer = b""
    with stream_errors(response, provider):
        async for chunk in response.content.iter_any():
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
        if buffer.strip():
            yield buffer


class EventDecoder(Protocol):
    """A dialect's stream decoder: ``feed`` takes one SSE event and returns its deltas, ``done``
    is set once the upstream marked the end, ``close`` returns the deltas that end the turn."""

    done: bool

    def feed(self, event: str | None, data: bytes) -> list[Delta]: ...

    def close(self) -> list[Delta]: ...


async def decode_events(events: AsyncIterator[tuple[str | None, bytes]],
                        decoder: EventDecoder) -> AsyncGenerator[Delta, None]:
    """The deltas of one streamed turn: ``decoder`` fed the events of ``iter_sse`` until it is
    ``done``, then closed."""
    try:
        async for event, data in events:
            for delta in decoder.feed(event, data):
                yield delta
            if decoder.done:
                break
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:  # release the upstream connection now, not at garbage collection
            await aclose()
    for delta in decoder.close():
        yield delta


def _find_event_end(buffer: bytes) -> tuple[int, int]:
    best, best_len = -1, 0
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        index = buffer.find(sep)
        if index >= 0 and (best < 0 or index < best):
            best, best_len = index, len(sep)
    return best, best_len


def _parse_sse_block(block: bytes) -> tuple[str | None, bytes] | None:
    event: str | None = None
    data: list[bytes] = []
    for raw_line in block.splitlines():
        if not raw_line or raw_line.startswith(b":"):
            continue
        field, _, value = raw_line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value.rstrip(b"\r"))
        elif field == b"event":
            event = value.strip().decode("utf-8", "replace")
    if not data:
        return None
    return event, b"\n".join(data)


def decode_json(data: bytes, provider: str) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise UpstreamError(f"{provider} sent malformed JSON") from exc


def safe_message(message: str, secret: str | None = None) -> str:
    """An upstream error message fit for the caller: the deployment's key replaced should the
    upstream echo it, and at most ``MAX_MESSAGE`` characters."""
    if secret:
        message = message.replace(secret, "[redacted]")
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return message


def read_error(log: logging.Logger, status: int, body: bytes,
               secret: str | None) -> tuple[str, str | None, str | None]:
    """What an adapter's ``_map_error`` starts with: the raw body to ``log`` at debug level only,
    then ``error_message(body)`` with the message made safe (``safe_message``)."""
    log.debug("upstream error %s: %r", status, body[:4096])
    message, code, param = error_message(body)
    return safe_message(message, secret), code, param


def error_message(body: bytes) -> tuple[str, str | None, str | None]:
    """``(message, code, param)`` from an OpenAI-style error body, tolerant of other shapes."""
    try:
        data = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or "upstream error"
            code = err.get("code") or err.get("type")
            param = err.get("param")
            return str(message), (str(code) if code is not None else None), (str(param) if param else None)
        if isinstance(err, str):
            return err, None, None
    return "upstream error", None, None
