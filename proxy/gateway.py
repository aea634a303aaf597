"""The gateway's parts, built from settings and started once per worker process."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from policies.catalogue import EMBEDDED_SIMULATOR, Catalogue
from providers.http import new_session
from providers.registry import load_providers
from proxy.auth import KeyRing, Principal
from proxy.engine import Engine
from proxy.sealing import Sealer
from proxy.settings import Settings
from proxy.store import ResponseStore, open_store
from tools import ToolRegistry, isolation_report

log = logging.getLogger("interlock")


@dataclass(slots=True)
class Gateway:
    settings: Settings
    keyring: KeyRing
    catalogue: Catalogue
    store: ResponseStore
    session: aiohttp.ClientSession
    engine: Engine
    simulator_url: str | None = None
    """Where the embedded simulator listens, when it runs."""
    _closers: list[Any] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> Gateway:
        closers: list[Any] = []
        simulator_url = None
        wants_simulator = any(p.base_url.startswith(EMBEDDED_SIMULATOR) for p in settings.providers.values())
        if wants_simulator and settings.simulator.embedded:
            from providers.simulator import SimulatorOptions, start_simulator

            simulator = await start_simulator(options=SimulatorOptions(
                latency_ms=settings.simulator.latency_ms, token_delay_ms=settings.simulator.token_delay_ms))
            closers.append(simulator.close)
            simulator_url = simulator.url
            log.info("embedded simulator listening on %s", simulator_url)
        store = open_store(settings.store, prefix=settings.store_prefix)
        await store.start()
        closers.append(store.close)
        session = new_session()
        closers.append(session.close)
        catalogue = Catalogue(settings, simulator_url=simulator_url)
        for alias, reason in catalogue.unavailable().items():
            log.warning("model %s is not served: %s", alias, reason)
        dialects = {provider.dialect for provider in settings.providers.values()} | {"openai_responses"}
        providers = load_providers(dialects, session)
        registry = ToolRegistry(settings.tools)
        if settings.tools:
            report = isolation_report()
            log.info("tool sandbox: %s", report.mode)
        engine = Engine(catalogue=catalogue, store=store, providers=providers, retry=settings.retry,
                        sealer=Sealer.from_env(settings.seal_key_env), tools=registry, tool_loop=settings.tool_loop,
                        team_tools={team: config.tools for team, config in settings.teams.items()}, session=session)
        return cls(settings=settings, keyring=KeyRing(settings), catalogue=catalogue, store=store,
                   session=session, engine=engine, simulator_url=simulator_url, _closers=closers)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request, from its ``Authorization`` header; raises the 401."""
        return self.keyring.authenticate(authorization)

    async def close(self) -> None:
        await self.engine.close()
        for closer in reversed(self._closers):
            await closer()
