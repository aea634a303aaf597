"""``Telemetry``: switched on when a gateway starts, off (and spans flushed) when it closes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from policies.circuit import CircuitBoard
from proxy.telemetry import metrics
from proxy.telemetry.logs import protect_secrets, redact_library_records
from proxy.telemetry.state import SWITCHES
from proxy.telemetry.tracing import TRACER_NAME, new_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from proxy.settings import Settings


class Telemetry:
    def __init__(self, provider: TracerProvider | None, circuits: CircuitBoard) -> None:
        self.provider = provider
        self._circuits = circuits

    @classmethod
    def start(cls, settings: Settings, *, circuits: CircuitBoard,
              upstreams: Callable[[], Iterable[str]]) -> Telemetry:
        """Switch this process's telemetry to ``settings.telemetry``; ``circuits`` and
        ``upstreams`` (the catalogue's, called at each scrape) feed the circuit gauges."""
        config = settings.telemetry
        protect_secrets(os.environ.get(name) for name in _secret_variables(settings))
        redact_library_records()
        provider, server_spans = new_provider(config) if config.tracing else (None, None)
        SWITCHES.provider, SWITCHES.server_spans = provider, server_spans
        SWITCHES.tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None
        SWITCHES.capture_content = config.capture_content
        SWITCHES.metrics = config.metrics
        SWITCHES.currency = settings.currency
        if config.metrics:
            metrics.CIRCUITS.board, metrics.CIRCUITS.upstreams = circuits, upstreams
        return cls(provider, circuits)

    async def close(self) -> None:
        """Switch everything off, then flush the spans not yet exported (in a thread: the
        exporter blocks)."""
        if SWITCHES.provider is self.provider:
            SWITCHES.tracer = SWITCHES.provider = SWITCHES.server_spans = None
            SWITCHES.metrics = SWITCHES.capture_content = False
        if metrics.CIRCUITS.board is self._circuits:
            metrics.CIRCUITS.board = None
        metrics.process_exited()
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)


def active_provider() -> TracerProvider | None:
    """The tracer provider of the running gateway, ``None`` while tracing is off."""
    return SWITCHES.provider


def _secret_variables(settings: Settings) -> list[str]:
    """Environment variables the settings name as holding secrets."""
    names = [settings.seal_key_env, *settings.telemetry.otlp_headers_env.values()]
    for provider in settings.providers.values():
        if provider.api_key_env:
            names.append(provider.api_key_env)
        names.extend(name.rstrip("?") for name in provider.credentials_env.values())
    return names
