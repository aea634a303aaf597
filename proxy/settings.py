"""Gateway configuration: one YAML file decoded into typed Structs.

A bad file fails with ``file:path: reason``. Provider secrets are named by environment variable
(``api_key_env``) and never written in the file, echoed or logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml
from msgspec import Meta, Struct

from policies.rules import Rules, Tier
from proxy.schema.upstream import AuthStyle, Dialect, Quirks, Timeouts
from proxy.telemetry.config import TelemetryConfig
from proxy.tool_loop import ToolLoopConfig
from tools import FetchPolicy, ToolSpec


class ConfigError(Exception):
    """A configuration file is invalid; the message is ``file:path: reason``."""


class Listen(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Address to bind. Use 0.0.0.0 only inside a container."""
    port: int = 8080
    workers: int = 1
    """Worker processes; each has its own upstream connection pool."""
    max_in_flight: Annotated[int, Meta(ge=1)] | None = 10_000
    """HTTP requests one worker serves at once, streams included; more get 503
    ``server_overloaded`` with ``retry-after`` (``proxy/overload.py``). ``null``: no cap."""
    header_timeout_s: Annotated[float, Meta(gt=0)] | None = 10.0
    """Seconds a client has to send a request's line and headers, from a new connection's opening
    or a later request's first byte; a slower one (slowloris) gets 408 and its connection closed
    (``proxy/header_guard.py``). It also bounds the rest of a body still arriving after its
    request was answered. ``null``: no bound."""
    max_header_bytes: Annotated[int, Meta(ge=1)] | None = 64 * 1024
    """Bytes a request's line and headers may take; more get 431 and the connection closed.
    ``null``: no bound."""


class SimulatorConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    embedded: bool = True
    """Start the built-in simulator inside the gateway; providers with base_url ``embedded``
    point at it. Meant for trying the gateway out without provider keys."""
    latency_ms: int = 0
    token_delay_ms: int = 0


class ProviderConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    dialect: Dialect
    """Wire dialect: openai_responses or openai_chat (every OpenAI-compatible host)."""
    base_url: str
    """Upstream base URL including the version path, e.g. https://api.openai.com/v1; ``embedded``
    for the built-in simulator (``embedded/v1beta`` for another base path on it)."""
    api_key_env: str | None = None
    """Environment variable holding the upstream key. Unset variable: the provider is disabled."""
    auth: AuthStyle = "bearer"
    credentials_env: dict[str, str] = msgspec.field(default_factory=dict)
    """Further secrets by environment variable, for dialects that need more than one key (Bedrock:
    ``access_key_id``, ``secret_access_key``, ``session_token``; Vertex: ``service_account``). A
    variable name ending in ``?`` is optional; a missing required one disables the provider."""
    region: str | None = None
    """Cloud region (Bedrock, Vertex)."""
    options: dict[str, str] = msgspec.field(default_factory=dict)
    """Dialect settings that are not secret (Vertex ``project``, ``location``, ``token_url``;
    Anthropic ``version``...); each adapter documents the ones it reads."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra headers sent upstream (no secrets here; use api_key_env)."""
    query: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra query parameters (e.g. Azure's api-version)."""
    quirks: Quirks = msgspec.field(default_factory=Quirks)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)


Capability = Literal["tools", "vision", "files", "reasoning"]


class Price(Struct, kw_only=True, forbid_unknown_fields=True):
    """Per million tokens, in the gateway's ``currency``."""

    input: Annotated[float, Meta(ge=0)]
    output: Annotated[float, Meta(ge=0)]
    cached_input: Annotated[float, Meta(ge=0)] | None = None
    """Cached input tokens; defaults to ``input``."""


class DeploymentConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    provider: str
    """A key of ``providers``."""
    model: str
    """The model name the upstream knows."""
    quirks: Quirks | None = None
    """Overrides the provider's quirks for this model (e.g. reasoning models reject temperature)."""
    timeouts: Timeouts | None = None
    tiers: list[Tier] = msgspec.field(default_factory=lambda: ["default"])
    """The service tiers this deployment serves: default, flex, priority."""
    native_tiers: dict[Tier, str] = msgspec.field(default_factory=dict)
    """The upstream's own ``service_tier`` value to send for a tier it serves natively (OpenAI
    ``{flex: flex, priority: priority}``); a tier without one is served without asking."""
    price: Price | None = None
    """Price per million tokens at the default tier (and at tiers without ``tier_prices``)."""
    tier_prices: dict[Tier, Price] = msgspec.field(default_factory=dict)
    """Price per million tokens at other tiers (flex is usually cheaper, priority dearer)."""
    tier_timeouts: dict[Tier, Timeouts] = msgspec.field(default_factory=dict)
    """Timeouts at a tier; flex without an entry waits three times the usual first byte and total."""
    region: str | None = None
    """Where the deployment runs, for team ``regions`` rules; defaults to the provider's region."""
    weight: Annotated[float, Meta(gt=0)] = 1.0
    """Share of traffic among equally ranked deployments (same ``order``)."""
    order: int | None = None
    """Rank in the alias, lowest first; deployments with the same order share traffic by weight.
    Default: the position in the list, so the list is tried in order."""
    context_window: Annotated[int, Meta(ge=1)] | None = None
    """Input tokens the model accepts; larger requests skip this deployment."""
    capabilities: list[Capability] | None = None
    """What the deployment supports; requests needing something else skip it. Unset: everything."""

    def __post_init__(self) -> None:
        if not self.tiers or len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"tiers must list each served tier once, got {self.tiers}")
        for field in ("native_tiers", "tier_prices", "tier_timeouts"):
            stray = sorted(set(getattr(self, field)) - set(self.tiers))
            if stray:
                raise ValueError(f"{field} names tier '{stray[0]}', which is not in tiers {self.tiers}")


Endpoint = Literal["/v1/responses", "/v1/chat/completions", "/v1/embeddings"]


class ModelConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    deployments: list[DeploymentConfig]
    """Tried in order: retries before the first byte, then the next deployment."""
    endpoints: list[Endpoint] = msgspec.field(default_factory=lambda: ["/v1/responses"])
    """API paths this model may be used on; listed by GET /v1/models."""
    owned_by: str = "interlock"


class KeyConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    sha256: str
    """Hex SHA-256 of the API key (``interlock hash-key``); the key itself is never stored."""
    name: str = ""
    """A label for logs and usage; never the key."""


class TeamConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[KeyConfig]
    tools: list[str] = msgspec.field(default_factory=list)
    """Server-side tools (names or globs of ``tools`` entries) the team's requests may run."""


class RetryConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    attempts: int = 2
    """Tries per deployment before falling back to the next one; only before the first byte."""
    backoff_base: float = 0.05
    backoff_max: float = 2.0


class CircuitConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    failures: Annotated[int, Meta(ge=1)] = 5
    """Consecutive failures (5xx, timeouts, 429, connection errors) that open a circuit."""
    cooldown_s: Annotated[float, Meta(gt=0)] = 30.0
    """Seconds an open circuit keeps its deployment out before a trial request (half-open)."""


class WebSocketConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    max_connection_s: Annotated[float, Meta(gt=0)] = 3600.0
    """How long a ``/v1/responses`` WebSocket connection may last (OpenAI's limit: 60 minutes).
    No response starts after it; the client gets ``websocket_connection_limit_reached``."""


class JobsConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Background responses (``background: true``), run as jobs (docs/background.md)."""

    workers: Annotated[int, Meta(ge=1)] = 16
    """Jobs one replica runs at once; the others wait in the queue."""
    lease_s: Annotated[float, Meta(gt=0)] = 30.0
    """A replica renews its hold on a running job every third of this; a job whose replica
    stopped renewing for this long is taken over by another (Redis store only)."""
    max_attempts: Annotated[int, Meta(ge=1)] = 2
    """Runs a job gets: a replica that dies or stops mid-job costs one, and the next run starts
    from the beginning; past this the response is ``failed``."""
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 10.0
    """On shutdown, how long running jobs may take to finish before they are handed back to the
    queue (Redis) or failed (SQLite)."""


class Settings(Struct, kw_only=True, forbid_unknown_fields=True):
    listen: Listen = msgspec.field(default_factory=Listen)
    store: str = "sqlite:///./data/interlock.db"
    """``sqlite:///path`` (embedded default) or ``redis://host:port/db``."""
    store_prefix: str = "interlock:"
    """Prefix of every Redis key, so several deployments can share one Redis."""
    seal_key_env: str = "INTERLOCK_SEAL_KEY"
    """Environment variable with the base64 of 32 random bytes that seals reasoning state handed
    to clients (``encrypted_content``). Every replica needs the same key."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Larger request bodies are refused with 413 before they are decoded."""
    request_body_timeout_s: Annotated[float, Meta(gt=0)] = 60.0
    """Seconds a client has to send a request's whole body once its headers are in; a slower one
    (slowloris) gets 408 and its connection closed."""
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    teams: dict[str, TeamConfig] = msgspec.field(default_factory=dict)
    tools: list[ToolSpec] = msgspec.field(default_factory=list)
    """Server-side tools the gateway runs in its sandbox (docs/tools.md)."""
    tool_loop: ToolLoopConfig = msgspec.field(default_factory=ToolLoopConfig)
    fetch_policy: FetchPolicy = msgspec.field(default_factory=FetchPolicy)
    """Which non-public addresses the gateway's own fetches (http tools) may reach
    (docs/security.md)."""
    policies_dir: str | None = None
    """Directory of team policy files (``<team>.yaml``), relative to this file; reloaded on
    SIGHUP and when a file changes. Unset: the ``teams`` section and ``policy`` only."""
    policy: Rules = msgspec.field(default_factory=Rules)
    """Global policy defaults under every team's (see docs/policies.md)."""
    currency: str = "USD"
    """The unit of prices and budgets."""
    limits_store: str | None = None
    """Where rate limits, budgets, circuit state and usage are shared: ``redis://``,
    ``rediss://``, ``redis+sentinel://host:port[,host:port]/service[/db]`` or
    ``redis+cluster://host:port``; ``memory`` keeps them in the process (one replica). Unset:
    the ``store`` when it is Redis, else ``memory``."""
    usage_retention_days: Annotated[int, Meta(ge=1)] = 31
    """How long per-request usage records are kept."""
    circuit: CircuitConfig = msgspec.field(default_factory=CircuitConfig)
    """When a deployment is taken out of rotation after failures."""
    admin_keys: list[KeyConfig] = msgspec.field(default_factory=list)
    """Keys of the admin endpoints (usage of any team, ``/v1/policy/explain``); they are no
    team's keys and reach no team's responses."""
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    """The WebSocket transport of ``/v1/responses`` (docs/websocket.md)."""
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    """Traces, metrics and what they may record (docs/observability.md)."""
    jobs: JobsConfig = msgspec.field(default_factory=JobsConfig)
    """How background responses run (docs/background.md)."""

    def __post_init__(self) -> None:
        for alias, model in self.models.items():
            for index, deployment in enumerate(model.deployments):
                if deployment.provider not in self.providers:
                    where = f"$.models.{alias}.deployments[{index}].provider"
                    raise msgspec.ValidationError(f"unknown provider '{deployment.provider}' - at `{where}`")
                provider_region = self.providers[deployment.provider].region
                if deployment.region and provider_region and deployment.region != provider_region:
                    where = f"$.models.{alias}.deployments[{index}].region"
                    raise msgspec.ValidationError(
                        f"'{deployment.region}' conflicts with provider region '{provider_region}' - at `{where}`")
        for team, config in self.teams.items():
            for index, key in enumerate(config.keys):
                if not re.fullmatch(r"[0-9a-f]{64}", key.sha256):
                    raise msgspec.ValidationError(
                        f"not a hex SHA-256 digest - at `$.teams.{team}.keys[{index}].sha256`")


_ENV_RE = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def _expand_env(text: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` in the file are read from the environment."""
    return _ENV_RE.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(_expand_env(text)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        _check_named_sections(data)
        return msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        message = str(exc)
        reason, _, where = message.rpartition(" - at `")
        if not reason:
            reason, where = message, "$`"
        raise ConfigError(f"{path}:{where.rstrip('`')}: {reason}") from None


_NAMED_SECTIONS: dict[str, type] = {"providers": ProviderConfig, "models": ModelConfig, "teams": TeamConfig}


def _check_named_sections(data: object) -> None:
    """msgspec reports a dict entry as ``[...]``; decode entries one by one so the error names
    the provider, model or team."""
    if not isinstance(data, dict):
        return
    for section, entry_type in _NAMED_SECTIONS.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        for name, value in entries.items():
            try:
                msgspec.convert(value, entry_type)
            except msgspec.ValidationError as exc:
                reason, _, where = str(exc).rpartition(" - at `")
                if not reason:
                    reason, where = str(exc), "$`"
                inner = where.rstrip("`").removeprefix("$")
                raise msgspec.ValidationError(f"{reason} - at `$.{section}.{name}{inner}`") from None


def default_config_path() -> Path:
    """``INTERLOCK_CONFIG`` or the example shipped in the repository."""
    env = os.environ.get("INTERLOCK_CONFIG")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "examples" / "gateway.yaml"
