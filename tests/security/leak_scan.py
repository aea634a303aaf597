"""A pytest plugin that looks for the test run's secrets in everything the run's gateways left
behind, and fails the run if it finds one.

What it collects while tests run, and scans when the session ends:

* every log record of the test process (a handler on the root logger; the record's message,
  arguments, exception and extras as the gateway handed them over, before any redaction), down
  to DEBUG for the gateway's loggers, aiohttp's and uvicorn's (``DEBUG_LOGGERS``: the scan lowers
  their levels while it runs; pytest's own log capture stays at ``log_level`` in pyproject.toml,
  so failure reports are not flooded);
* every WebSocket frame a test's client receives (the ``websockets`` library's client protocol,
  which the tests' sync and asyncio clients and the Agents SDK test's relay all use);
* the error bodies the ``Api`` helper receives (``record_reply`` is its httpx response hook);
* the spans of every tracer provider a gateway of this process starts (telemetry on);
* the Prometheus text of this process's metrics;
* Redis keys and values under the tests' prefixes (``*interlock-test-*``), read at the end of each
  test module, before its fixtures delete them, and at the end of the run;
* every file left in pytest's temporary directory: SQLite stores, logs of gateway processes,
  configuration and policy files.

The secrets: every module-level string constant of a loaded ``tests`` module whose name ends in
``KEY``, ``SECRET``, ``TOKEN`` or ``PASSWORD`` (team, admin and provider keys, sealing keys), and
the environment's values of such names when the run started (``INTERLOCK_SEAL_KEY``, provider
keys). Values shorter than ``MIN_SECRET`` are left out: they would match ordinary text.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

MIN_SECRET = 8
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_TEST_KEYS = "*interlock-test-*"
_SECRET_NAME = re.compile(r"(?:^|_)(?:KEY|SECRET|TOKEN|PASSWORD)$")
_STANDARD_RECORD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
DEBUG_LOGGERS = ("interlock", "proxy", "providers", "tools", "policies", "aiohttp", "uvicorn")
"""Loggers scanned down to DEBUG: the gateway's (named ``interlock.*``, or after their module),
aiohttp's (the upstream client, the simulator's server) and uvicorn's."""


def named_secrets(modules: Iterable[tuple[str, object]], environ: dict[str, str]) -> set[str]:
    """The secrets of ``modules`` (name, module) named ``tests`` or ``tests.*`` and of ``environ``."""
    found = {value for name, value in environ.items() if _SECRET_NAME.search(name)}
    for module_name, module in modules:
        if module_name == "tests" or module_name.startswith("tests."):
            found.update(value for name, value in vars(module).items()
                         if isinstance(value, str) and _SECRET_NAME.search(name))
    return {value for value in found if len(value) >= MIN_SECRET}


class _Records(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, str(record.msg), repr(record.args)]
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
        parts.extend(f"{name}={value!r}" for name, value in record.__dict__.items() if name not in _STANDARD_RECORD)
        self._sink.append(" ".join(parts))


class LeakScan:
    """Register once per run (tests/conftest.py does); see the module docstring."""

    def __init__(self, secrets: Callable[[], set[str]] | None = None, redis_url: str | None = REDIS_URL) -> None:
        environ = dict(os.environ)
        self._secrets = secrets or (lambda: named_secrets(list(sys.modules.items()), environ))
        self._redis_url = redis_url
        self.seen: dict[str, list[str]] = {"log": [], "error body": [], "websocket frame": [], "span": [],
                                           "metrics": [], "redis": [], "file": []}
        self._handler = _Records(self.seen["log"])
        self._levels: dict[str, int] = {}
        """The levels of ``DEBUG_LOGGERS`` before ``start``, restored by ``stop``."""
        self._patches = pytest.MonkeyPatch()
        self._providers: list[Any] = []
        self._spans: Any = None
        self.temp_root: Path | None = None
        """pytest's temporary directory of the run (a session fixture sets it): read at the end."""
        self.leaks: list[str] = []

    # -- what tests and gateways hand over ----------------------------------------------------

    def record_reply(self, reply: httpx.Response) -> None:
        """httpx response hook: keep the body of every error reply."""
        if reply.status_code >= 400:
            reply.read()
            self.seen["error body"].append(f"{reply.request.method} {reply.request.url.path}: {reply.text}")

    def watch_spans(self) -> None:
        """Export the spans of the running gateway's tracer provider here too (once each)."""
        from proxy.telemetry import active_provider

        provider = active_provider()
        if provider is None or any(seen is provider for seen in self._providers):
            return
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        if self._spans is None:
            self._spans = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(self._spans))
        self._providers.append(provider)

    def read_redis(self) -> None:
        if self._redis_url is None:
            return
        import redis

        client = redis.Redis.from_url(self._redis_url)
        try:
            for key in client.scan_iter(match=REDIS_TEST_KEYS, count=1000):
                self.seen["redis"].append(f"{key!r}: {_redis_value(client, key)!r}")
        except redis.ConnectionError:
            return
        finally:
            client.close()

    def read_files(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                try:
                    content = path.read_bytes()
                except OSError:  # removed while the walk went on
                    continue
                self.seen["file"].append(f"{path}: {content.decode('latin-1')}")

    def read_metrics(self) -> None:
        from proxy.telemetry import exposition

        self.seen["metrics"].append(exposition().decode())

    # -- the scan ------------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Where each secret was found first in each source, as ``<its first 4 characters>... in
        <source>: <what precedes it>``; empty when nothing leaked."""
        if self._spans is not None:
            self.seen["span"] = [_span_text(span) for span in self._spans.get_finished_spans()]
        wholes = {source: "\n".join(texts) for source, texts in self.seen.items()}
        leaks = []
        for secret in sorted(self._secrets()):
            for source, whole in wholes.items():
                at = whole.find(secret)
                if at >= 0:
                    context = whole[max(at - 100, 0):at].replace("\n", " ")
                    leaks.append(f"{secret[:4]}... in {source}: ...{context}<secret>")
        self.leaks = leaks
        return leaks

    # -- pytest hooks --------------------------------------------------------------------------

    def start(self) -> None:
        """Collect log records and WebSocket frames from now on."""
        logging.getLogger().addHandler(self._handler)
        self._levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
        for name in DEBUG_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
        self._patches.setattr(ClientProtocol, "events_received", _recording_frames(self.seen["websocket frame"]))

    def stop(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._patches.undo()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.start()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        self.watch_spans()  # the module's gateway is up by now
        yield
        self.watch_spans()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
        if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
            self.read_redis()  # before the module's fixtures delete their prefixes
        yield

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop()
        self.read_redis()
        self.read_metrics()
        if self.temp_root is not None:
            self.read_files(self.temp_root)
        if self.scan():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        counts = ", ".join(f"{len(texts)} {source}" for source, texts in self.seen.items())
        terminalreporter.write_line(f"secrets scan: {len(self._secrets())} secrets looked for in {counts}")
        if self.leaks:
            terminalreporter.section("secrets found in logs, replies, spans, metrics or stores", red=True)
            for leak in self.leaks:
                terminalreporter.line(leak, red=True)


def _recording_frames(sink: list[str]) -> Callable[[ClientProtocol], list[Event]]:
    """``ClientProtocol.events_received`` that also keeps each frame's text in ``sink`` (frames
    arrive decompressed; a continuation frame is joined to the frame before it)."""
    received = ClientProtocol.events_received

    def events_received(protocol: ClientProtocol) -> list[Event]:
        events = received(protocol)
        for event in events:
            if isinstance(event, Frame):
                text = bytes(event.data).decode("utf-8", "replace")
                if event.opcode is Opcode.CONT and sink:
                    sink[-1] += text
                else:
                    sink.append(text)
        return events

    return events_received


def _redis_value(client: Any, key: bytes) -> object:
    kind = client.type(key)
    readers: dict[bytes, Callable[[], object]] = {
        b"string": lambda: client.get(key),
        b"hash": lambda: client.hgetall(key),
        b"list": lambda: client.lrange(key, 0, -1),
        b"set": lambda: client.smembers(key),
        b"zset": lambda: client.zrange(key, 0, -1, withscores=True),
        b"stream": lambda: client.xrange(key),
    }
    reader = readers.get(kind)
    return reader() if reader is not None else kind


def _span_text(span: Any) -> str:
    events = [(event.name, dict(event.attributes or {})) for event in span.events]
    return f"{span.name} {dict(span.attributes or {})!r} {events!r} {span.status.description!r}"
