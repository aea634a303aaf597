"""A deterministic stand-in for LLM upstreams, for demos, end-to-end tests and benchmarks.

It speaks every wire dialect in ``providers/sim_dialects`` in the exact native shapes of the
recordings in ``shared/fixtures/providers``; today:

* ``POST /v1/responses`` (``openai_responses``: JSON, or SSE with ``event:`` lines when
  ``stream`` is true),
* ``POST /v1/chat/completions`` (``openai_chat``: JSON, or SSE ending in ``data: [DONE]``, with
  a usage chunk when ``stream_options.include_usage`` is true),

each dialect's token-counting endpoint where the real service has one (``count_reply``: the
same count as a reply's input tokens), and, whatever the dialects, ``GET /v1/models`` and
``GET``/``DELETE /_sim/requests`` (the last requests received, so tests can assert what the
gateway sent upstream).

What it answers (the same request always gets the same reply; only ids and timestamps vary):

* with callable function tools and a last conversation item that is not a tool result: a call
  to the first tool (or the one the tool choice forces or allows), arguments built from the
  tool's JSON schema (``sample_json``); the first N tools with ``x-sim-parallel: N`` when
  parallel calls are allowed;
* after tool results: ``"Tool said: <output>"``; otherwise ``"Echo: <last user text>"``;
* with a JSON schema output format: a JSON object built from the schema like tool arguments;
  with a plain JSON-object format: ``{"text": <the plain reply>}``.

Tokens: one token is one *piece*, a run of up to 8 non-space characters with the whitespace
before it (``pieces_of``); streamed deltas are exactly these pieces, so an output token limit
cuts the reply at a delta boundary. Input tokens count the pieces of instructions, messages,
tool calls and tool outputs. Cached and reasoning tokens are always 0. Tool calls are never
truncated.

Per-request control headers (``x-sim-*``) override ``SimulatorOptions`` so one running
simulator serves many test cases; faults are described in ``providers.simulator_faults`` and
work the same in every dialect.

How to add a dialect
--------------------

Write one module, ``providers/sim_dialects/<name>.py``; nothing else needs editing (this file,
the package ``__init__`` and the faults pick it up by themselves). In it:

1. Subclass ``providers.sim_dialects.base.SimDialect``: set ``name`` and ``routes`` (method,
   aiohttp path pattern; captures such as ``{model}`` reach you in ``request.match_info``), and
   implement ``read`` (native request -> ``Turn``), ``render_json`` and ``render_stream``
   (``Plan`` -> native body / list of frames).
2. Override what differs from OpenAI's defaults: ``wants_stream`` (by URL, default
   ``"stream": true``), ``model_of`` (default the body's ``"model"``), ``stream_content_type``
   (default SSE), ``error_body``/``error_content_type`` (default OpenAI's error object),
   ``auth_header``/``auth_scheme`` (default ``Authorization: Bearer``; ``None`` accepts any).
3. End the module with ``DIALECT = YourDialect()``.

Read requests and build replies with the helpers in ``providers.sim_dialects.base``
(``text_of``, ``count_tokens``, ``pieces_of``, ``sample_json``, ``new_id``, ``encode_json``,
``callable_tools`` and ``output_format_of`` for OpenAI-style fields), so token counts and sample
values agree across dialects. Private helpers shared by dialects go in ``_name.py`` modules,
which discovery skips. Test it in ``tests/unit`` through ``start_simulator()``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
from aiohttp import web

from providers.sim_dialects import BadRequest, ErrorShape, Plan, SimDialect, Turn, discover
from providers.sim_dialects.base import count_tokens, encode_json, pieces_of, sample_json
from providers.simulator_faults import Fault, before_reply, error_response, parse_fault, send_broken

__all__ = ["RunningSimulator", "SimulatorOptions", "create_app", "main", "start_simulator"]


class SimulatorOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How a simulator behaves; every field but ``api_key``, ``record_limit`` and ``models`` can
    also be set per request by the header named in its docstring."""

    latency_ms: float = 0.0
    """Delay before the reply's first byte (``x-sim-latency-ms``)."""
    token_delay_ms: float = 0.0
    """Delay between streamed events (``x-sim-token-delay-ms``)."""
    fault: str | None = None
    """Fault to inject, e.g. ``status:503`` or ``reset`` (``x-sim-fault``); see
    ``providers.simulator_faults`` for the list."""
    fail_times: int | None = None
    """Inject ``fault`` only into the first N requests that share ``fault_key``, then reply
    normally (``x-sim-fail-times``); ``None`` injects it into every request."""
    fault_key: str = ""
    """Names the request counter that ``fail_times`` uses (``x-sim-fault-key``)."""
    parallel: int = 1
    """How many offered tools to call in one turn when parallel calls are allowed (``x-sim-parallel``)."""
    trickle_delay_ms: float = 1.0
    """Pause between single bytes under the ``trickle`` fault (``x-sim-trickle-delay-ms``)."""
    set_cookie: str | None = None
    """A ``Set-Cookie`` header on the reply, as providers behind Cloudflare send
    (``x-sim-set-cookie``)."""
    api_key: str | None = None
    """When set, requests must carry it the way their dialect sends keys (``Authorization:
    Bearer <api_key>`` for OpenAI, see ``SimDialect.auth_header``) or get a 401."""
    record_limit: int = 100
    """How many recent requests ``GET /_sim/requests`` keeps; 0 turns recording off."""
    models: tuple[str, ...] = ("simulator",)
    """Model ids listed by ``GET /v1/models``; requests may name any model."""


# Header -> (field, parser) for per-request overrides of SimulatorOptions.
_HEADER_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "x-sim-latency-ms": ("latency_ms", float),
    "x-sim-token-delay-ms": ("token_delay_ms", float),
    "x-sim-fault": ("fault", str),
    "x-sim-fail-times": ("fail_times", int),
    "x-sim-fault-key": ("fault_key", str),
    "x-sim-parallel": ("parallel", int),
    "x-sim-trickle-delay-ms": ("trickle_delay_ms", float),
    "x-sim-set-cookie": ("set_cookie", str),
}

_WORD = re.compile(r"\w+")
_SNIPPET = 200
"""Characters of user text or tool output quoted back in a reply."""
_OPENAI_ERRORS = ErrorShape()
"""Errors of the dialect-neutral endpoints (``/v1/models``) take OpenAI's shape."""
_RESERVED_ROUTES = frozenset({("GET", "/v1/models"), ("GET", "/_sim/requests"), ("DELETE", "/_sim/requests")})
_READ_ERRORS = (AttributeError, TypeError, KeyError, ValueError)
"""What ``SimDialect.read`` raises for a field of the wrong JSON type somewhere in the body."""

_decode = msgspec.json.Decoder().decode
DEFAULT_BACKLOG = 128
"""aiohttp's own default listen backlog."""


# ---------------------------------------------------------------- deciding the reply


def _plan(turn: Turn, parallel: int) -> Plan:
    words = _WORD.findall(turn.last_user)
    word = words[-1] if words else "sample"
    if turn.tools and not turn.tool_outputs:
        count = max(parallel, 1) if turn.parallel and len(turn.tools) >= 2 else 1
        calls = [(name, sample_json(schema or {"type": "object"}, word)) for name, schema in turn.tools[:count]]
        out = sum(count_tokens(args) for _, args in calls)
        return Plan(text=None, pieces=[], calls=calls, incomplete=False,
                    input_tokens=turn.input_tokens, output_tokens=out)
    if turn.tool_outputs:
        text = "Tool said: " + "; ".join(output[:_SNIPPET] for output in turn.tool_outputs)
    else:
        text = "Echo: " + turn.last_user[:_SNIPPET] if turn.last_user else "Echo."
    if turn.output_format == "json_object":
        text = encode_json({"text": text}).decode()
    elif turn.output_format is not None:
        text = sample_json(turn.output_format, word)
    pieces = pieces_of(text)
    incomplete = turn.max_tokens is not None and len(pieces) > turn.max_tokens
    if incomplete:
        pieces = pieces[: turn.max_tokens]
        text = "".join(pieces)
    return Plan(text=text, pieces=pieces, calls=[], incomplete=incomplete,
                input_tokens=turn.input_tokens, output_tokens=len(pieces))


# ---------------------------------------------------------------- the application


class _State:
    """Per-app memory: options, fault counters, recorded requests, and the shutdown signal."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.fail_counts: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=options.record_limit)
        # Set at shutdown so stalled handlers let go instead of holding the server open.
        self.closing = asyncio.Event()

    def record(self, request: web.Request, body: Any, raw: bytes) -> None:
        if self.options.record_limit:
            self.requests.append({
                "method": request.method,
                "path": request.path,
                "headers": {name.lower(): value for name, value in request.headers.items()},
                "body": body if body is not None else raw.decode("utf-8", "replace"),
            })

    def fault_for(self, options: SimulatorOptions) -> Fault | None:
        """The fault this request gets, counting it against ``fail_times`` when that is set."""
        if options.fault is None:
            return None
        fault = parse_fault(options.fault)
        if options.fail_times is not None:
            self.fail_counts[options.fault_key] += 1
            if self.fail_counts[options.fault_key] > options.fail_times:
                return None
        return fault


_STATE = web.AppKey("simulator_state", _State)
_COOKIE = web.RequestKey("sim_set_cookie", str)
"""The ``Set-Cookie`` value a request asked its reply to carry."""


def _request_options(base: SimulatorOptions, headers: Mapping[str, str]) -> SimulatorOptions:
    """``base`` with the request's ``x-sim-*`` headers applied; raises ``ValueError`` on a bad value."""
    changes: dict[str, Any] = {}
    for header, (field, parse) in _HEADER_OPTIONS.items():
        raw = headers.get(header)
        if raw is not None:
            try:
                changes[field] = parse(raw.strip())
            except ValueError:
                raise ValueError(f"bad {header} header: {raw!r}") from None
    return msgspec.structs.replace(base, **changes) if changes else base


def _authorized(state: _State, request: web.Request, dialect: SimDialect) -> bool:
    key = state.options.api_key
    return key is None or dialect.authorized(request, key)


async def _send_stream(
    request: web.Request, frames: list[bytes], delay_s: float, content_type: str
) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.content_type = content_type
    if content_type.startswith("text/"):
        resp.charset = "utf-8"
    try:
        await resp.prepare(request)
        if delay_s:
            for index, frame in enumerate(frames):
                if index:
                    await asyncio.sleep(delay_s)
                await resp.write(frame)
        else:
            await resp.write(b"".join(frames))
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing is left to tell it
    return resp


async def _serve(request: web.Request, dialect: SimDialect) -> web.StreamResponse:
    state = request.app[_STATE]
    raw = await request.read()
    try:
        body = _decode(raw)
    except msgspec.DecodeError:
        body = None
    state.record(request, body, raw)
    try:
        options = _request_options(state.options, request.headers)
        fault = state.fault_for(options)
    except ValueError as exc:
        return error_response(dialect, 400, str(exc))
    if options.set_cookie is not None:
        request[_COOKIE] = options.set_cookie
    if not _authorized(state, request, dialect):
        return error_response(dialect, 401)
    if not isinstance(body, dict):
        return error_response(dialect, 400, "We could not parse the JSON body of your request.")
    if dialect.model_of(body, request) is None:
        return error_response(dialect, 400, "Missing required parameter: 'model'.", param="model")
    if options.latency_ms:
        await asyncio.sleep(options.latency_ms / 1000)
    if fault is not None:
        replaced = await before_reply(request, dialect, fault, state.closing)
        if replaced is not None:
            return replaced
    try:
        counted = dialect.count_reply(body, request)
        if counted is not None:
            return web.Response(body=counted, content_type="application/json")
        turn = dialect.read(body, request)
    except BadRequest as exc:
        return error_response(dialect, 400, str(exc))
    except _READ_ERRORS:
        return error_response(dialect, 400, "The request body does not have the shape this endpoint expects.")
    plan = _plan(turn, options.parallel)
    stream = dialect.wants_stream(body, request)
    frames = dialect.render_stream(body, request, plan) if stream else [dialect.render_json(body, request, plan)]
    if fault is not None:
        return await send_broken(request, dialect, frames, fault, stream=stream, closing=state.closing,
                                 trickle_delay_s=options.trickle_delay_ms / 1000)
    if stream:
        return await _send_stream(request, frames, options.token_delay_ms / 1000, dialect.stream_content_type)
    return web.Response(body=frames[0], content_type="application/json")


def _handler(dialect: SimDialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _serve(request, dialect)

    return handle


def _models_handler(options: SimulatorOptions) -> Callable[[web.Request], Awaitable[web.Response]]:
    created = int(time.time())
    payload = encode_json({"object": "list", "data": [
        {"id": model, "object": "model", "created": created, "owned_by": "interlock-simulator"}
        for model in options.models]})

    async def models(request: web.Request) -> web.Response:
        key = request.app[_STATE].options.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return error_response(_OPENAI_ERRORS, 401)
        return web.Response(body=payload, content_type="application/json")

    return models


async def _list_requests(request: web.Request) -> web.Response:
    return web.Response(body=encode_json(list(request.app[_STATE].requests)), content_type="application/json")


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[_STATE].requests.clear()
    return web.Response(status=204)


async def _signal_closing(app: web.Application) -> None:
    app[_STATE].closing.set()


def _add_dialects(app: web.Application, dialects: Sequence[SimDialect]) -> None:
    """Serve every route of every dialect; two claims on one (method, path) fail at start-up."""
    owners: dict[tuple[str, str], str] = {route: "the simulator" for route in _RESERVED_ROUTES}
    for dialect in dialects:
        handle = _handler(dialect)
        for method, path in (*dialect.routes, *dialect.count_routes):
            route = (method.upper(), path)
            if route in owners:
                raise ValueError(f"{dialect.name} and {owners[route]} both claim {route[0]} {path}")
            owners[route] = dialect.name
            app.router.add_route(route[0], path, handle)
        app.router.add_routes(dialect.extra_routes())


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    """The simulator as an aiohttp application, serving every dialect ``discover`` finds.
    Raises ``ValueError`` for a bad ``options.fault`` or two dialects claiming one route."""
    options = options or SimulatorOptions()
    if options.fault is not None:
        parse_fault(options.fault)  # fail at start-up, not on the first request
    app = web.Application(client_max_size=64 * 1024 * 1024)  # conversations with images get large
    app[_STATE] = _State(options)
    app.on_shutdown.append(_signal_closing)
    app.on_response_prepare.append(_add_cookie)
    _add_dialects(app, discover())
    app.router.add_get("/v1/models", _models_handler(options))
    app.router.add_get("/_sim/requests", _list_requests)
    app.router.add_delete("/_sim/requests", _clear_requests)
    return app


async def _add_cookie(request: web.Request, response: web.StreamResponse) -> None:
    cookie = request.get(_COOKIE)
    if cookie is not None:
        response.headers.add("Set-Cookie", cookie)


class RunningSimulator:
    """A simulator serving on a socket; ``url`` has no trailing slash and no ``/v1``."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self._runner = runner
        self.url = url

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_simulator(
    host: str = "127.0.0.1", port: int = 0, options: SimulatorOptions | None = None, *, backlog: int = DEFAULT_BACKLOG,
    reuse_port: bool = False,
) -> RunningSimulator:
    """Serve a simulator on ``host:port`` (port 0 picks a free one) until ``close()``. ``backlog``:
    connections the kernel completes before the simulator accepts them (capped by the system's
    ``net.core.somaxconn``); a client beyond it waits a SYN retransmission, a second or more.
    ``reuse_port``: bind with SO_REUSEPORT, so several processes share the port."""
    # handler_cancellation: a client that gives up on a stalled reply ends its handler too.
    runner = web.AppRunner(create_app(options), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog, reuse_port=reuse_port or None)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return RunningSimulator(runner, f"http://{f'[{host}]' if ':' in host else host}:{bound_port}")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve_forever(host: str, port: int, options: SimulatorOptions, backlog: int, *, reuse_port: bool) -> None:
    simulator = await start_simulator(host, port, options, backlog=backlog, reuse_port=reuse_port)
    # Through the loop, so SIGTERM ends the wait below between callbacks rather than raising in
    # the middle of one.
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    # One write: with --processes, each process says it, and lines must not interleave.
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), f"interlock simulator listening on {simulator.url}\n".encode())
    try:
        await stopped.wait()
    finally:
        await simulator.close()


def main(argv: list[str] | None = None) -> int:
    """``interlock simulate``: serve a simulator until interrupted."""
    parser = argparse.ArgumentParser(
        prog="interlock simulate", description="Serve a deterministic OpenAI-compatible upstream for demos and tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each reply")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between streamed events")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG,
                        help="connections queued before being accepted; raise it for load tests that open "
                             "hundreds of connections at once")
    parser.add_argument("--processes", type=int, default=1,
                        help="serving processes sharing the port (SO_REUSEPORT), for load tests that need more "
                             "than one core of upstream; each keeps its own /_sim/requests")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes > 1 and args.port == 0:
        parser.error("--processes needs a fixed --port: each process binds it")
    options = SimulatorOptions(latency_ms=args.latency_ms, token_delay_ms=args.token_delay_ms, api_key=args.api_key)
    children = _fork_servers(args.processes - 1)
    try:
        # Ctrl-C is how this command is meant to stop; SIGTERM (_serve_forever) stops it the same way.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner, contextlib.suppress(KeyboardInterrupt):
            runner.run(_serve_forever(args.host, args.port, options, args.backlog, reuse_port=args.processes > 1))
    finally:
        _stop_children(children)
    return 0


def _fork_servers(count: int) -> list[int]:
    """Fork ``count`` more serving processes before any event loop exists; in a child, an empty
    list (it serves and has none of its own)."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            return []
        children.append(pid)
    return children


def _stop_children(children: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM each child, SIGKILL those still there after ``grace_s``, and reap them all."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    waiting = [pid for pid in children if not _reaped(pid)]
    while waiting:
        if time.monotonic() > deadline:
            for pid in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.02)
        waiting = [pid for pid in waiting if not _reaped(pid)]


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) != (0, 0)
    except ChildProcessError:  # reaped already
        return True
