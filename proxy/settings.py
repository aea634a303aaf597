"""Gateway configuration: one YAML file decoded into typed Structs.

A bad file fails with ``file:path: reason``. Provider secrets are named by environment variable
(``api_key_env``) and never written in the file, echoed or logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import msgspec
import yaml
from msgspec import Struct

from proxy.schema.upstream import AuthStyle, Dialect, Quirks, Timeouts


class ConfigError(Exception):
    """A configuration file is invalid; the message is ``file:path: reason``."""


class Listen(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Address to bind. Use 0.0.0.0 only inside a container."""
    port: int = 8080
    workers: int = 1
    """Worker processes; each has its own upstream connection pool."""


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


class DeploymentConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    provider: str
    """A key of ``providers``."""
    model: str
    """The model name the upstream knows."""
    quirks: Quirks | None = None
    """Overrides the provider's quirks for this model (e.g. reasoning models reject temperature)."""
    timeouts: Timeouts | None = None


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


class RetryConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    attempts: int = 2
    """Tries per deployment before falling back to the next one; only before the first byte."""
    backoff_base: float = 0.05
    backoff_max: float = 2.0


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
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    teams: dict[str, TeamConfig] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for alias, model in self.models.items():
            for index, deployment in enumerate(model.deployments):
                if deployment.provider not in self.providers:
                    where = f"$.models.{alias}.deployments[{index}].provider"
                    raise msgspec.ValidationError(f"unknown provider '{deployment.provider}' - at `{where}`")
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
