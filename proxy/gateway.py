"""The gateway's parts, built from settings and started once per worker process."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from policies.catalogue import EMBEDDED_SIMULATOR, Catalogue
from policies.gate import Gate
from policies.teams import PolicyStore
from providers.http import new_session
from providers.registry import load_providers
from proxy.auth import KeyRing, Principal
from proxy.engine import Engine
from proxy.errors import AuthenticationFailed, PermissionDenied
from proxy.jobs import JobRunner, open_job_queue
from proxy.sealing import Sealer
from proxy.settings import Settings, TeamConfig
from proxy.store import ResponseStore, open_store
from proxy.telemetry import Telemetry, note_caller
from tools import ToolRegistry, guarded_session, isolation_report

log = logging.getLogger("interlock")

ADMIN = "admin"
"""The principal's team for ``admin_keys``: admin endpoints only, never a team's data."""


@dataclass(slots=True)
class Gateway:
    settings: Settings
    policies: PolicyStore
    """Catalogue, keys and team policies in force; replaced whole on reload."""
    gate: Gate
    admins: KeyRing
    store: ResponseStore
    session: aiohttp.ClientSession
    engine: Engine
    jobs: JobRunner
    """Runs background responses; started with the gateway, closed first."""
    simulator_url: str | None = None
    """Where the embedded simulator listens, when it runs."""
    _closers: list[Any] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, *, config_path: Path | None = None) -> Gateway:
        """``config_path``: the file ``settings`` came from, re-read on reload (without it only
        the team policy files are). Raises ``PolicyError`` when a policy file is invalid."""
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
        try:
            policies = PolicyStore(settings, config_path=config_path, simulator_url=simulator_url)
        except BaseException:
            for closer in reversed(closers):
                await closer()
            raise
        for alias, reason in policies.current.catalogue.unavailable().items():
            log.warning("model %s is not served: %s", alias, reason)
        gate = Gate.open(policies)
        gate.start()
        closers.append(gate.close)
        telemetry = Telemetry.start(settings, circuits=gate.circuits,
                                    upstreams=lambda: policies.current.catalogue.upstreams())
        closers.append(telemetry.close)
        dialects = {provider.dialect for provider in settings.providers.values()} | {"openai_responses"}
        providers = load_providers(dialects, session)
        registry = ToolRegistry(settings.tools)
        if settings.tools:
            report = isolation_report()
            log.info("tool sandbox: %s", report.mode)
        # Tools fetch through their own session: only it checks addresses (upstreams are trusted config).
        fetches = guarded_session(settings.fetch_policy)
        closers.append(fetches.close)
        engine = Engine(gate=gate, store=store, providers=providers, retry=settings.retry,
                        sealer=Sealer.from_env(settings.seal_key_env), tools=registry, tool_loop=settings.tool_loop,
                        session=fetches)
        queue = open_job_queue(settings.store, prefix=settings.store_prefix, lease_s=settings.jobs.lease_s)
        jobs = JobRunner(engine=engine, queue=queue, config=settings.jobs)
        await jobs.start()
        admins = KeyRing(msgspec.structs.replace(settings, teams={ADMIN: TeamConfig(keys=settings.admin_keys)}))
        return cls(settings=settings, policies=policies, gate=gate, admins=admins, store=store,
                   session=session, engine=engine, jobs=jobs, simulator_url=simulator_url, _closers=closers)

    @property
    def catalogue(self) -> Catalogue:
        return self.policies.current.catalogue

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request, from its ``Authorization`` header; raises the 401."""
        principal = self.policies.current.keyring.authenticate(authorization)
        note_caller(principal.team)
        return principal

    def authenticate_admin(self, authorization: str | None) -> Principal:
        """An ``admin_keys`` caller; a team's key gets 403, anything else 401."""
        try:
            return self.admins.authenticate(authorization)
        except AuthenticationFailed:
            self.authenticate(authorization)  # a team's key: authenticated, but not an admin
            raise PermissionDenied("This endpoint needs an admin key.", code="admin_key_required") from None

    async def close(self) -> None:
        await self.jobs.close()
        for closer in reversed(self._closers):
            await closer()
