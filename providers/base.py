"""The contract between the engine and a provider adapter (one adapter per wire dialect)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol, runtime_checkable

import aiohttp
import msgspec
from msgspec import Struct

from proxy.schema.deltas import Delta
from proxy.schema.upstream import Deployment, UpstreamRequest

_encode_json = msgspec.json.Encoder().encode


class PreparedCall(Struct, kw_only=True):
    """The native HTTP request an adapter would send; built without I/O so tests can assert it."""

    method: str = "POST"
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    """JSON values, or ``msgspec.Raw`` for a part already encoded: what is sent is ``wire_body()``."""

    def wire_body(self) -> bytes:
        """The body as it is sent."""
        return _encode_json(self.body)


class Provider(Protocol):
    """A wire dialect. ``prepare`` translates, ``run`` performs the call and yields deltas.

    ``run`` raises ``proxy.errors.GatewayError`` subclasses (mapped in one place per adapter)
    before the first delta when the upstream refuses the request; after the first delta a
    failure is raised the same way and the engine turns it into an ``error`` event.
    """

    def prepare(self, request: UpstreamRequest) -> PreparedCall: ...

    def run(self, request: UpstreamRequest) -> AsyncGenerator[Delta, None]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A dialect whose upstream counts input tokens with the model's own tokenizer (OpenAI
    ``/responses/input_tokens``, Anthropic ``/messages/count_tokens``, Gemini ``:countTokens``).

    ``prepare_count`` translates exactly as ``prepare`` would (so it refuses what ``run`` would
    refuse) and keeps only what the counting endpoint takes; ``count_tokens`` sends that call and
    returns the count, raising ``GatewayError`` subclasses as ``run`` does.
    """

    def prepare_count(self, request: UpstreamRequest) -> PreparedCall: ...

    async def count_tokens(self, call: PreparedCall, deployment: Deployment) -> int: ...


class ProviderFactory(Protocol):
    def __call__(self, session: aiohttp.ClientSession) -> Provider: ...


class SessionProvider:
    """Base of the adapters: each calls its upstream over the worker's one session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
