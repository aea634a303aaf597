"""The systems under test: how each is started, where it listens and what it is sent.

* ``direct``: the simulator itself (what any proxy adds is measured against it);
* ``passthrough``: ``tests.bench.passthrough``, the smallest correct Litestar + aiohttp proxy;
* ``gateway``: ``interlock serve`` with ``store: false`` requests; ``gateway-sqlite`` and
  ``gateway-redis`` the same with ``store: true`` on each store backend;
* ``litellm``: LiteLLM's proxy on the simulator's Chat Completions path (``tests.bench.litellm``),
  compared with ``direct-chat`` (the simulator's Chat Completions path) and ``gateway-chat``
  (the gateway translating Responses to Chat Completions upstream).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from tests.bench.procs import Proc, Processes, free_port, wait_http, wait_tcp

SHORT_INPUT = "Hello there, how are you today?"
# 100 one-letter words: the simulator echoes up to 200 characters, one streamed delta per word,
# so a streamed reply to this carries about 100 more events than one to SHORT_INPUT.
LONG_INPUT = " ".join("abcdefghij"[i % 10] for i in range(100))
REPO = Path(__file__).resolve().parents[2]
SIMULATOR_BACKLOG = 4096
"""The simulator's listen backlog (Linux caps it at ``net.core.somaxconn``, 4096 by default)."""

# How each target is started and asked; ``gateway-chat`` and ``direct-chat`` share the process
# of ``gateway`` and ``direct``.
DIALECT_PATH = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}


@dataclass
class Target:
    """One configuration under load: a URL, its headers and bodies, and the process whose CPU and
    memory are charged to it."""

    key: str
    label: str
    url: str
    server: Proc
    headers: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    """``json``, ``stream`` and ``stream_long`` request bodies."""
    note: str = ""

    def body(self, mode: str) -> bytes:
        return self.bodies[mode]


def responses_bodies(model: str, *, store: bool) -> dict[str, bytes]:
    def body(text: str, stream: bool) -> bytes:
        data: dict[str, object] = {"model": model, "input": text, "store": store}
        if stream:
            data["stream"] = True
        return json.dumps(data, separators=(",", ":")).encode()

    return {"json": body(SHORT_INPUT, False), "stream": body(SHORT_INPUT, True),
            "stream_long": body(LONG_INPUT, True)}


def chat_bodies(model: str) -> dict[str, bytes]:
    def body(text: str, stream: bool) -> bytes:
        data: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if stream:
            data["stream"] = True
        return json.dumps(data, separators=(",", ":")).encode()

    return {"json": body(SHORT_INPUT, False), "stream": body(SHORT_INPUT, True),
            "stream_long": body(LONG_INPUT, True)}


def python() -> str:
    """The project's interpreter (this one: the harness runs under ``uv run``)."""
    return sys.executable


def start_simulator(procs: Processes, name: str, *, cores: str | None, latency_ms: float = 0.0,
                    token_delay_ms: float = 0.0, processes: int = 1) -> tuple[Proc, str]:
    """``interlock simulate`` on a free loopback port, served by ``processes`` processes; the
    process (its tree) and its base URL (no ``/v1``)."""
    port = free_port()
    # A backlog above the largest burst of new connections (256 closed-loop connections, thousands
    # of held streams): a connection the kernel drops waits a second for its SYN retry.
    argv = [python(), "-m", "proxy.cli", "simulate", "--host", "127.0.0.1", "--port", str(port),
            "--backlog", str(SIMULATOR_BACKLOG), "--processes", str(processes)]
    if latency_ms:
        argv += ["--latency-ms", f"{latency_ms:g}"]
    if token_delay_ms:
        argv += ["--token-delay-ms", f"{token_delay_ms:g}"]
    proc = procs.start(name, argv, cores=cores, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_http(proc, base + "/v1/models")
    return proc, base


def start_passthrough(procs: Processes, upstream: str, *, cores: str | None, workers: int = 1,
                      name: str = "passthrough", launcher: Sequence[str] = (),
                      startup_timeout: float = 30.0) -> tuple[Proc, str]:
    """``launcher``: a command the server runs under (``tests.bench.instructions``: callgrind)."""
    port = free_port()
    argv = [*launcher, python(), "-m", "uvicorn", "tests.bench.passthrough:app", "--host", "127.0.0.1", "--port",
            str(port), "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    proc = procs.start(name, argv, cores=cores, cwd=REPO,
                       env={"PASSTHROUGH_UPSTREAM": upstream + "/v1/responses"})
    wait_tcp(proc, port, timeout=startup_timeout)
    return proc, f"http://127.0.0.1:{port}"


def start_redis(procs: Processes, redis_server: str, *, cores: str | None) -> tuple[Proc, str]:
    """A throwaway Redis on a free loopback port, nothing saved to disk."""
    port = free_port()
    argv = [redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--protected-mode", "yes"]
    proc = procs.start("redis", argv, cores=cores)
    wait_tcp(proc, port)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_otlp_sink(procs: Processes, *, cores: str | None) -> tuple[Proc, str]:
    """``tests.bench.otlp_sink`` on a free loopback port; the process and its base URL."""
    port = free_port()
    proc = procs.start("otlp-sink", [python(), "-m", "tests.bench.otlp_sink", "--port", str(port)], cores=cores,
                       cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_http(proc, base + "/stats")
    return proc, base


@dataclass
class BenchKey:
    """The team key the load generators send, and its digest for the gateway config."""

    key: str
    sha256: str

    @classmethod
    def new(cls) -> BenchKey:
        key = "sk-bench-" + secrets.token_hex(16)
        # The same command an operator runs (`interlock hash-key`).
        digest = subprocess.run([python(), "-m", "proxy.cli", "hash-key", key], check=True, capture_output=True,
                                text=True, cwd=REPO, timeout=60).stdout.strip()
        return cls(key=key, sha256=digest)


@dataclass(frozen=True)
class Pipeline:
    """What the gateway rows run besides translation, as issue 6 asks ("the full pipeline on"):
    rate limits and budgets for the bench key and team in a shared store, usage accounting priced
    per token, and sampled tracing exported over OTLP."""

    limits_store: str
    """``redis://`` (the harness's throwaway Redis), or ``memory`` when none could be started."""
    otlp_endpoint: str | None
    """The harness's OTLP sink (``tests.bench.otlp_sink``); None: spans made, not exported."""
    sample_ratio: float = 0.01
    tracing: bool = True
    metrics: bool = True
    limits: bool = True
    """Rate limits and budgets on the bench key and team; False: none set (usage still recorded)."""



@dataclass(frozen=True)
class Variant:
    """A gateway configuration the part-by-part measurements (``--instructions``, ``--parts``) run:
    the full pipeline, or it with one part or all three left out."""

    key: str
    label: str
    left_out: str
    """What this configuration leaves out of the full pipeline ("" for the full one)."""


VARIANTS = (
    Variant("full", "gateway, full pipeline", ""),
    Variant("no-tracing", "gateway without tracing", "tracing (1% sampled, OTLP export)"),
    Variant("no-metrics", "gateway without metrics", "Prometheus metrics"),
    Variant("no-limits", "gateway, limits and usage records in memory, no limits set",
            "rate limits, budgets and usage records in Redis"),
    Variant("bare", "gateway without all three", "all three"),
)


def variant_pipeline(pipeline: Pipeline, variant: str) -> Pipeline:
    """``pipeline`` with the part ``variant`` leaves out turned off."""
    tracing = variant not in ("no-tracing", "bare")
    metrics = variant not in ("no-metrics", "bare")
    limits = variant not in ("no-limits", "bare")
    return replace(pipeline, tracing=tracing, metrics=metrics,
                   limits_store=pipeline.limits_store if limits else "memory", limits=limits)


# High enough never to refuse a bench request, so every request pays for the checks and the
# settlement without being turned away.
_BENCH_LIMITS = {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}
_BENCH_BUDGETS = {"daily_budget": 1_000_000_000, "monthly_budget": 1_000_000_000}
_BENCH_PRICE = {"input": 1.0, "output": 4.0}


def gateway_config(path: Path, *, port: int, workers: int, upstream: str, store: str, key: BenchKey,
                   pipeline: Pipeline) -> Path:
    """Write a gateway YAML: the simulator as an ``openai_responses`` and an ``openai_chat``
    provider (priced), one team with the bench key under key and team limits and budgets, the
    given store, limits in ``pipeline.limits_store``, sampled tracing and metrics (each part as
    ``pipeline`` turns it on)."""
    telemetry: dict[str, object] = {"tracing": pipeline.tracing, "sample_ratio": pipeline.sample_ratio,
                                    "metrics": pipeline.metrics}
    if pipeline.tracing and pipeline.otlp_endpoint is not None:
        telemetry["otlp_endpoint"] = pipeline.otlp_endpoint
    config = {
        "listen": {"host": "127.0.0.1", "port": port, "workers": workers},
        "store": store,
        "store_prefix": "interlock-bench:",
        "limits_store": pipeline.limits_store,
        "simulator": {"embedded": False},
        "telemetry": telemetry,
        "providers": {
            "sim": {"dialect": "openai_responses", "base_url": upstream + "/v1"},
            "simchat": {"dialect": "openai_chat", "base_url": upstream + "/v1"},
        },
        "models": {
            "sim": {"deployments": [{"provider": "sim", "model": "sim-1", "price": _BENCH_PRICE}]},
            "sim-chat": {"deployments": [{"provider": "simchat", "model": "sim-1", "price": _BENCH_PRICE}]},
        },
        "teams": {"bench": {"keys": [{"sha256": key.sha256, "name": "bench"}]}},
    }
    if pipeline.limits:
        config["policy"] = {"limits": {"key": _BENCH_LIMITS, "team": {**_BENCH_LIMITS, **_BENCH_BUDGETS}}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(procs: Processes, name: str, *, work: Path, upstream: str, store: str, key: BenchKey,
                  pipeline: Pipeline, workers: int, cores: str | None, launcher: Sequence[str] = (),
                  startup_timeout: float = 60.0) -> tuple[Proc, str]:
    """``launcher``: as for ``start_passthrough``."""
    port = free_port()
    config = gateway_config(work / f"{name}.yaml", port=port, workers=workers, upstream=upstream, store=store,
                            key=key, pipeline=pipeline)
    argv = [*launcher, python(), "-m", "proxy.cli", "serve", "--config", str(config), "--workers", str(workers),
            "--log-level", "warning"]
    proc = procs.start(name, argv, cores=cores, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_http(proc, base + "/healthz", timeout=startup_timeout)
    return proc, base
