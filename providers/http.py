"""Shared upstream HTTP plumbing: one aiohttp session per worker, timeouts, and stream framing.

Byte chunks from the socket never line up with events, so the parsers buffer and split on the
framing itself (blank lines for SSE, newlines for NDJSON).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
import msgspec

from providers.base import PreparedCall
from proxy.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from proxy.schema.deltas import Delta
from proxy.schema.upstream import Deployment
from proxy.telemetry import with_trace_context

ErrorMapper = Callable[[int, Mapping[str, str], bytes], GatewayError]
MAX_MESSAGE = 2000
"""The most characters of an upstream error message that travel on to the caller."""
SSEEvent = tuple[str | None, bytes]
"""An SSE event's ``event:`` name (``None`` when it has none) and its ``data:`` lines joined by LF."""


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """The worker's upstream session: keep-alive pool, no per-request client construction."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    # No cookie jar: one session carries every team's calls, and a cookie an upstream sets
    # (OpenAI's API sets Cloudflare's) would go back with every later call, whoever makes it.
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, raise_for_status=False,
                                 skip_auto_headers=("User-Agent",), cookie_jar=aiohttp.DummyCookieJar())


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

    Error replies are read (bounded) and mapped by the adapter's ``map_error``; a redirect is
    refused, not followed; transport failures become retryable upstream errors. Nothing here logs
    the request headers.
    """
    timeouts = deployment.timeouts
    timeout = _until_headers(timeouts.total, timeouts.connect, timeouts.first_byte)
    try:
        # Never followed: aiohttp drops only ``Authorization`` on the way to another host, so a
        # redirect would carry an ``x-api-key`` or ``api-key`` credential (and the body) there.
        response = await session.request(call.method, call.url, data=call.wire_body(), allow_redirects=False,
                                          headers=with_trace_context(call.headers), timeout=timeout)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{deployment.provider} did not answer within {timeouts.first_byte:g}s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"could not connect to {deployment.provider}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{deployment.provider} connection failed: {type(exc).__name__}") from exc
    if 300 <= response.status < 400:
        response.release()
        raise UpstreamError(f"{deployment.provider} answered with a redirect (HTTP {response.status}), which the "
                            "gateway does not follow", code="upstream_redirect", retryable=False)
    if response.status >= 300:
        try:
            body = await response.content.read(65536)
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            response.release()
        raise map_error(response.status, response.headers, body)
    _read_idle(response, timeouts.idle)
    return response


@functools.lru_cache(maxsize=256)
def _until_headers(total: float, connect: float, first_byte: float) -> aiohttp.ClientTimeout:
    """The request's timeouts, built once per distinct deployment setting. aiohttp's read timeout
    starts once the body is sent, so until the headers it is the ``first_byte`` bound."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=first_byte)


def _read_idle(response: aiohttp.ClientResponse, idle: float) -> None:
    """From the headers on, bound the gaps between chunks by ``idle`` instead, counted from now.
    No connection: the body has already arrived whole."""
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is not None:
        protocol.read_timeout = idle
        protocol.start_timeout()


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


def counting_call(call: PreparedCall, deployment: Deployment, path: str, fields: frozenset[str]) -> PreparedCall:
    """``call`` (a translated request) aimed at the dialect's token-counting ``path`` instead, its
    body cut to the ``fields`` that endpoint takes; headers stay as they are."""
    return msgspec.structs.replace(call, url=join_url(deployment.base_url, path, deployment.query),
                                   body={name: value for name, value in call.body.items() if name in fields})


async def read_token_count(response: aiohttp.ClientResponse, provider: str, field: str) -> int:
    """The count a token-counting endpoint sent in ``field``; anything else is an upstream error."""
    _, reply = await read_json(response, provider)
    value = reply.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UpstreamError(f"{provider} sent no token count")
    return value


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


async def sse_reads(response: aiohttp.ClientResponse, provider: str) -> AsyncGenerator[Iterator[SSEEvent], None]:
    """Per read of the body, the SSE events it completes (comments and keep-alives skipped), each
    parsed as it is drawn; then the last event, should the body end without its blank line. One
    step of this generator per read, not per event: a long reply's reads carry dozens. The
    caller closes it (``aclose``) when it stops early, which closes the upstream connection."""
    decoder = SSEDecoder()
    with stream_errors(response, provider):
        async for chunk in response.content.iter_any():
            yield decoder.feed(chunk)
        yield iter(decoder.finish())


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


async def decode_events(response: aiohttp.ClientResponse, provider: str,
                        decoder: EventDecoder) -> AsyncGenerator[Delta, None]:
    """The deltas of one streamed turn: ``decoder`` fed the reply's SSE events until it is
    ``done``, then closed."""
    reads = sse_reads(response, provider)
    try:
        async for events in reads:
            for event, data in events:
                for delta in decoder.feed(event, data):
                    yield delta
                if decoder.done:
                    break
            if decoder.done:
                break
    finally:
        await reads.aclose()  # release the upstream connection now, not at garbage collection
    for delta in decoder.close():
        yield delta


class SSEDecoder:
    """Incremental Server-Sent Events framing: byte chunks in, whole events out.

    Lines may end in LF, CRLF or CR (a CRLF may be split across chunks); a blank line ends an
    event; comment lines, ``id:``/``retry:`` fields and events without ``data:`` are dropped.
    Linear in the bytes fed: each chunk is searched once and an event spread over many chunks
    is joined once, however small the chunks or large the event."""

    __slots__ = ("_held_cr", "_pending")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        """Line-end-normalised chunks of the event not yet ended."""
        self._held_cr = False
        """The last chunk ended in CR, kept until the next byte says whether it begins a CRLF: so
        a CRLF stream's event ends on its last byte, as it always did (only CR-only streams,
        which no upstream sends, would see an event wait for the next chunk)."""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        """The events that ``chunk`` completes, in order, each parsed when it is drawn: the first
        goes on before the rest of a large read is parsed."""
        if self._held_cr:
            self._held_cr = False
            chunk = b"\r" + chunk
        if b"\r" in chunk:
            if chunk[-1] == 13:
                self._held_cr = True
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return iter(())
        pending = self._pending
        ends_event = b"\n\n" in chunk or (chunk[0] == 10 and bool(pending) and pending[-1][-1] == 10)
        pending.append(chunk)
        if not ends_event:
            return iter(())
        *blocks, rest = b"".join(pending).split(b"\n\n")
        self._pending = [rest] if rest else []
        return (event for block in blocks if (event := _parse_sse_block(block)) is not None)

    def finish(self) -> list[SSEEvent]:
        """The last event when the stream ended without its blank line (lenient, as upstreams
        that omit it are still understood)."""
        rest = b"".join(self._pending)
        self._pending, self._held_cr = [], False
        event = _parse_sse_block(rest) if rest.strip() else None
        return [event] if event is not None else []


def _parse_sse_block(block: bytes) -> SSEEvent | None:
    """One event's lines (LF-separated, no blank line inside)."""
    # The usual events first: one data line, without or after a name.
    if block[:6] == b"data: " and b"\n" not in block:
        return None, block[6:]
    if block[:7] == b"event: ":
        name, _, rest = block.partition(b"\n")
        if rest[:6] == b"data: " and b"\n" not in rest:
            return name[7:].strip().decode("utf-8", "replace"), rest[6:]
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # blank, or a ":" comment
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
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


def logged_body(body: bytes, secret: str | None) -> bytes:
    """An upstream error body as the debug log gets it: its first 4 KiB, the deployment's key
    replaced should the upstream echo it (a record reaches every handler as it is, not only the
    gateway's redacting formatters)."""
    if secret:
        body = body.replace(secret.encode(), b"[redacted]")
    return body[:4096]


def read_error(log: logging.Logger, status: int, body: bytes,
               secret: str | None) -> tuple[str, str | None, str | None]:
    """What an adapter's ``_map_error`` starts with: the raw body to ``log`` at debug level only
    (``logged_body``), then ``error_message(body)`` with the message made safe (``safe_message``)."""
    log.debug("upstream error %s: %r", status, logged_body(body, secret))
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
