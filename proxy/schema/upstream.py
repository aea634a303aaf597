"""What the engine hands a provider adapter: one deployment and one fully resolved request."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from proxy.schema.items import Item
from proxy.schema.request import CreateResponseBody, Tool, ToolChoice

Dialect = Literal["openai_responses", "openai_chat", "anthropic", "gemini", "bedrock", "cohere", "ollama"]
AuthStyle = Literal["bearer", "api-key", "x-api-key", "none"]


class Timeouts(Struct, kw_only=True, forbid_unknown_fields=True):
    """Seconds. ``first_byte`` bounds the wait for response headers and the first chunk,
    ``idle`` the gap between stream chunks, ``total`` the whole upstream call."""

    connect: float = 5.0
    first_byte: float = 60.0
    idle: float = 60.0
    total: float = 600.0


class Quirks(Struct, kw_only=True, forbid_unknown_fields=True):
    """Capability differences between hosts that speak the same dialect."""

    developer_role: bool = True
    """The host accepts the ``developer`` role; when false it is sent as ``system``."""
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    """Which Chat Completions field carries the output token limit."""
    stream_usage: bool = True
    """The host honours ``stream_options.include_usage``."""
    reasoning_effort: bool = True
    """The host accepts ``reasoning_effort``."""
    sampling_params: bool = True
    """The host accepts temperature/top_p (OpenAI reasoning models do not)."""
    reasoning_effort_map: dict[str, str] = msgspec.field(default_factory=dict)
    """``reasoning.effort`` values the host spells differently, sent as the mapped value; values
    not listed go as they are (Mistral takes only ``none`` and ``high``)."""
    tool_call_ids: Literal["any", "alnum9"] = "any"
    """Tool-call ids the host accepts. ``alnum9`` (Mistral): exactly nine letters or digits; other
    ids in the history are replaced by a stable nine-character digest, the same for a call and its
    output. Ids the host returns are passed on unchanged."""
    tool_choice_required: Literal["required", "any"] = "required"
    """The host's word for ``tool_choice: "required"`` (Mistral's own is ``any``)."""
    allowed_tools: Literal["native", "subset"] = "native"
    """How an ``allowed_tools`` tool choice is sent: as Chat's own ``allowed_tools`` choice, or
    (hosts without it) as only the allowed tools with the choice's mode."""
    thinking_history: bool = False
    """Reasoning items in the history go back as a ``thinking`` content chunk leading the next
    assistant message (Mistral); otherwise they are left out."""


class Deployment(Struct, kw_only=True):
    """One concrete upstream a model alias may be served by."""

    name: str
    provider: str
    dialect: Dialect
    base_url: str
    model: str
    api_key: str | None = msgspec.field(default=None)
    auth: AuthStyle = "bearer"
    credentials: dict[str, str] = msgspec.field(default_factory=dict)
    """Secrets beyond ``api_key`` (see ``ProviderConfig.credentials_env``); never logged."""
    region: str | None = None
    options: dict[str, str] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    query: dict[str, str] = msgspec.field(default_factory=dict)
    quirks: Quirks = msgspec.field(default_factory=Quirks)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    native_tier: str | None = None
    """The upstream's own ``service_tier`` value to ask for on this call (set by the router from
    the catalogue's ``native_tiers``); ``None``: send none."""

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"Deployment(name={self.name!r}, provider={self.provider!r}, model={self.model!r})"


class UpstreamRequest(Struct, kw_only=True):
    """A request ready for translation: ``items`` is the whole conversation (previous response
    input and output, then this request's input) with item references resolved."""

    body: CreateResponseBody
    items: list[Item]
    tools: list[Tool]
    tool_choice: ToolChoice | None
    instructions: str | None
    deployment: Deployment
    stream: bool
