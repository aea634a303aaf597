"""What a chaos run injects, and the gateway configuration that injects it.

Each upstream fault is a model alias whose one deployment's provider sends the simulator an
``x-sim-fault`` header (``providers/simulator_faults.py``) on every call, so the catalogue alone
decides which requests meet which fault. Each fault lists the outcomes the documentation promises
for it (README "Architecture", docs/policies.md "Circuits"): retries and fallback before the first
byte, then an HTTP error envelope with the mapped status; after the first byte an ``error`` event
and ``response.failed``. An open circuit answers 503 for any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.auth import hash_key
from tests.gateway_server import TEAM_A_KEY, TEAM_B_KEY

ADMIN_KEY = "sk-chaos-admin"
TEAMS = {"team-a": TEAM_A_KEY, "team-b": TEAM_B_KEY}
KEY_NAMES = {"team-a": "a", "team-b": "b"}
HEALTHY = "sim"
"""The alias without faults: a fallback target."""
HEALTHY_SLOW = "sim-slow"
"""Without faults, streaming at a model's pace, so that replica faults meet streams mid-way."""
HEALTHY_LONG = "sim-long"
"""Without faults, streaming for seconds: an upstream call the gateway failed to close on a
client abort would still be open well after the abort."""
_TOKEN_DELAYS_MS = {HEALTHY_SLOW: 60, HEALTHY_LONG: 200}
PRICE = {"input": 1.5, "output": 6.0}
"""Per million tokens on every deployment, so that every response has a cost the budgets count."""
DAILY_BUDGET = 1_000_000.0
"""Far above what a run spends: the run checks the spend counters add up, not refusals."""
CIRCUIT_OPEN = 503
JOB_RUNS = 2
"""``jobs.max_attempts``: runs a background response may get."""


@dataclass(frozen=True)
class UpstreamFault:
    """An alias whose upstream misbehaves in one way, and what clients may see for it."""

    alias: str
    label: str
    """The row of the report."""
    fault: str | None = None
    """The ``x-sim-fault`` spec; ``None`` for a provider nothing listens on."""
    dialect: str = "openai_responses"
    errors: frozenset[int] = frozenset()
    """HTTP statuses of the error envelope it may end in (besides an open circuit's 503); none:
    every request completes."""
    fails_mid_stream: bool = False
    """A stream may end with ``error`` + ``response.failed`` (the fault came after the first byte)."""
    fallback: bool = False
    """The alias falls back to a healthy deployment."""

    def documented_statuses(self) -> frozenset[int]:
        return self.errors | {CIRCUIT_OPEN} if self.errors else frozenset()


UPSTREAM_FAULTS = (
    UpstreamFault("f-429", "upstream 429 + retry-after", "status:429", errors=frozenset({429})),
    UpstreamFault("f-429-bare", "upstream 429 without retry-after", "status:429:noretry", errors=frozenset({429})),
    UpstreamFault("f-500", "upstream 500", "status:500", errors=frozenset({502})),
    UpstreamFault("f-502", "upstream 502", "status:502", errors=frozenset({502})),
    UpstreamFault("f-503", "upstream 503", "status:503", errors=frozenset({503})),
    UpstreamFault("f-refused", "connection refused", None, errors=frozenset({503})),
    UpstreamFault("f-reset", "reset before first byte", "reset", errors=frozenset({502})),
    UpstreamFault("f-reset-fallback", "reset, healthy fallback", "reset", fallback=True),
    UpstreamFault("f-cut", "reset after first byte", "reset-after-first-byte", errors=frozenset({502}),
                  fails_mid_stream=True),
    UpstreamFault("f-stall", "stall before first byte", "stall", errors=frozenset({504})),
    UpstreamFault("f-stall-mid", "stall mid-stream (idle timeout)", "stall-mid-stream", errors=frozenset({502, 504}),
                  fails_mid_stream=True),
    UpstreamFault("f-bad-sse", "malformed SSE / JSON", "malformed", errors=frozenset({502}), fails_mid_stream=True),
    UpstreamFault("f-bad-chat", "malformed SSE / JSON (chat)", "malformed", dialect="openai_chat",
                  errors=frozenset({502}), fails_mid_stream=True),
    UpstreamFault("f-bad-frames", "malformed eventstream frames", "malformed", dialect="bedrock",
                  errors=frozenset({502}), fails_mid_stream=True),
    UpstreamFault("f-trickle", "slow trickle", "trickle"),
)
FAULTS_BY_ALIAS = {fault.alias: fault for fault in UPSTREAM_FAULTS}

_TIMEOUTS = {"connect": 1, "first_byte": 2, "idle": 1, "total": 20}
"""Short, so stalls end within the run; a trickled reply's bytes come far faster than ``idle``."""
_BASE_PATHS = {"openai_responses": "/v1", "openai_chat": "/v1", "bedrock": "/"}
CALCULATOR = {"name": "calculator", "description": "Evaluate arithmetic exactly.", "kind": "python",
              "target": "tools.builtin.calculator:evaluate",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"], "additionalProperties": False}}


def _provider(base_url: str, dialect: str = "openai_responses", **headers: str) -> dict[str, Any]:
    return {"dialect": dialect, "base_url": base_url + _BASE_PATHS[dialect], "timeouts": _TIMEOUTS,
            "headers": {f"x-sim-{name.replace('_', '-')}": value for name, value in headers.items()}}


def gateway_sections(simulator_url: str, refused_url: str, *, max_in_flight: int | None = None) -> dict[str, Any]:
    """The top-level sections of a chaos gateway file (``write_gateway_config`` overrides): the
    healthy aliases, one alias per upstream fault, the calculator for both teams, an admin key for
    ``/v1/usage``, priced deployments under a daily budget, and short job leases so a killed
    replica's jobs are taken over within the run. ``max_in_flight``: ``listen.max_in_flight``
    (default: the setting's)."""
    providers = {HEALTHY: _provider(simulator_url)}
    for alias, delay in _TOKEN_DELAYS_MS.items():
        providers[alias] = _provider(simulator_url, token_delay_ms=str(delay))
    models: dict[str, Any] = {alias: {"deployments": [{"provider": alias, "model": "sim-1", "price": PRICE}]}
                              for alias in providers}
    for fault in UPSTREAM_FAULTS:
        providers[fault.alias] = (_provider(refused_url, fault.dialect) if fault.fault is None else
                                  _provider(simulator_url, fault.dialect, fault=fault.fault, trickle_delay_ms="1"))
        deployments = [{"provider": fault.alias, "model": "sim-1", "price": PRICE}]
        if fault.fallback:
            deployments.append({"provider": HEALTHY, "model": "sim-1", "price": PRICE})
        models[fault.alias] = {"deployments": deployments}
    teams = {team: {"keys": [{"sha256": hash_key(key), "name": KEY_NAMES[team]}], "tools": ["calculator"]}
             for team, key in TEAMS.items()}
    return {
        "listen": {} if max_in_flight is None else {"max_in_flight": max_in_flight},
        "simulator": {"embedded": False},
        "providers": providers,
        "models": models,
        "teams": teams,
        "tools": [CALCULATOR],
        "admin_keys": [{"sha256": hash_key(ADMIN_KEY), "name": "chaos"}],
        "policy": {"limits": {"team": {"daily_budget": DAILY_BUDGET}}},
        "circuit": {"failures": 20, "cooldown_s": 2},
        "retry": {"attempts": 2, "backoff_base": 0.02, "backoff_max": 0.1},
        "jobs": {"workers": 16, "lease_s": 3, "max_attempts": JOB_RUNS, "shutdown_grace_s": 2},
    }
