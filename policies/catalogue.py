"""The model catalogue: aliases clients ask for, and the deployments that can serve them.

Each alias keeps every deployment of its configuration as a ``DeploymentSpec`` (the routing
facts: tiers, prices, region, weight...), with the ``Deployment`` an adapter calls when its
credentials are present, or the reason it cannot be used (shown by explain).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import msgspec
from msgspec import Struct

from policies.rules import Tier
from proxy.schema.response import ModelObject
from proxy.schema.upstream import Deployment, Timeouts
from proxy.settings import DeploymentConfig, ModelConfig, Price, Settings

EMBEDDED_SIMULATOR = "embedded"
FLEX_TIMEOUT_FACTOR = 3.0
"""Flex without ``tier_timeouts.flex`` waits this many times the usual first byte and total."""


class DeploymentSpec(Struct, frozen=True, kw_only=True):
    """One deployment of an alias as the router sees it."""

    name: str
    """``alias#index:provider/model``, unique in the catalogue."""
    upstream: str
    """``provider/model``: the circuit breaker's unit, shared by every alias that uses it."""
    provider: str
    model: str
    region: str | None
    tiers: tuple[Tier, ...]
    native_tiers: dict[Tier, str]
    price: Price | None
    tier_prices: dict[Tier, Price]
    weight: float
    order: int
    context_window: int | None
    capabilities: frozenset[str] | None
    """``None``: not declared, assumed to support everything."""
    deployment: Deployment | None
    """What the adapter calls; ``None`` when ``unavailable`` says why it cannot be used."""
    unavailable: str | None = None
    by_tier: dict[Tier, Deployment] = msgspec.field(default_factory=dict)
    """``deployment`` ready to call at each tier served: ``native_tier`` and the tier's timeouts."""


class CatalogueModel(Struct, kw_only=True):
    alias: str
    endpoints: list[str]
    owned_by: str
    deployments: list[Deployment]
    """Only those whose credentials are present, in preference order."""
    unavailable_reason: str | None = None
    specs: list[DeploymentSpec] = msgspec.field(default_factory=list)
    """Every configured deployment, usable or not, in configuration order."""


class Catalogue:
    """Resolves aliases from settings; reads provider keys from the environment once."""

    def __init__(self, settings: Settings, *, simulator_url: str | None = None,
                 environ: Callable[[str], str | None] = os.environ.get) -> None:
        self._models = {alias: self._build(alias, model, settings, simulator_url, environ)
                        for alias, model in settings.models.items()}
        self.created = 0

    @staticmethod
    def _build(alias: str, model: ModelConfig, settings: Settings, simulator_url: str | None,
               environ: Callable[[str], str | None]) -> CatalogueModel:
        deployments: list[Deployment] = []
        specs: list[DeploymentSpec] = []
        missing: list[str] = []
        for index, entry in enumerate(model.deployments):
            deployment, lacking = Catalogue._deployment(alias, index, entry, settings, simulator_url, environ)
            missing.extend(lacking)
            if deployment is not None:
                deployments.append(deployment)
            specs.append(_spec(alias, index, entry, settings, deployment, lacking))
        reason = None if deployments else "no deployment has credentials: set " + ", ".join(sorted(set(missing)))
        return CatalogueModel(alias=alias, endpoints=list(model.endpoints), owned_by=model.owned_by,
                              deployments=deployments, unavailable_reason=reason, specs=specs)

    @staticmethod
    def _deployment(alias: str, index: int, entry: DeploymentConfig, settings: Settings, simulator_url: str | None,
                    environ: Callable[[str], str | None]) -> tuple[Deployment | None, list[str]]:
        """The deployment, or ``None`` and what it lacks."""
        provider = settings.providers[entry.provider]
        key = environ(provider.api_key_env) if provider.api_key_env else None
        if provider.api_key_env and not key:
            return None, [provider.api_key_env]
        credentials: dict[str, str] = {}
        lacking = []
        for name, variable in provider.credentials_env.items():
            optional = variable.endswith("?")
            value = environ(variable.rstrip("?"))
            if value:
                credentials[name] = value
            elif not optional:
                lacking.append(variable)
        if lacking:
            return None, lacking
        base_url = provider.base_url
        if base_url.startswith(EMBEDDED_SIMULATOR):
            if simulator_url is None:
                return None, ["the embedded simulator (simulator.embedded is false)"]
            # "embedded" alone is the simulator's /v1; "embedded/v1beta" names another base path.
            base_url = simulator_url + (base_url[len(EMBEDDED_SIMULATOR):] or "/v1")
        return Deployment(
            name=f"{alias}#{index}:{entry.provider}/{entry.model}",
            provider=entry.provider,
            dialect=provider.dialect,
            base_url=base_url,
            model=entry.model,
            api_key=key,
            auth=provider.auth if key else "none",
            credentials=credentials,
            region=entry.region or provider.region,
            options=dict(provider.options),
            headers=dict(provider.headers),
            query=dict(provider.query),
            quirks=entry.quirks or provider.quirks,
            timeouts=entry.timeouts or provider.timeouts,
        ), []

    def find(self, alias: str) -> CatalogueModel | None:
        """The model whether or not it can be served now (explain says why not)."""
        return self._models.get(alias)

    def get(self, alias: str) -> CatalogueModel | None:
        """The model if it exists and has at least one usable deployment."""
        model = self._models.get(alias)
        return model if model is not None and model.deployments else None

    def listed(self) -> list[ModelObject]:
        return [ModelObject(id=m.alias, created=self.created, owned_by=m.owned_by, endpoints=m.endpoints)
                for m in self._models.values() if m.deployments]

    def upstreams(self) -> list[str]:
        """Every ``provider/model`` the aliases route to: the circuits worth watching."""
        return sorted({spec.upstream for model in self._models.values() for spec in model.specs})

    def unavailable(self) -> dict[str, str]:
        """Aliases that cannot be served and why (shown by ``interlock check``)."""
        return {m.alias: m.unavailable_reason for m in self._models.values() if m.unavailable_reason}


def _spec(alias: str, index: int, entry: DeploymentConfig, settings: Settings, deployment: Deployment | None,
          lacking: list[str]) -> DeploymentSpec:
    provider = settings.providers[entry.provider]
    return DeploymentSpec(
        name=f"{alias}#{index}:{entry.provider}/{entry.model}",
        upstream=f"{entry.provider}/{entry.model}",
        provider=entry.provider,
        model=entry.model,
        region=entry.region or provider.region,
        tiers=tuple(entry.tiers),
        native_tiers=dict(entry.native_tiers),
        price=entry.price,
        tier_prices=dict(entry.tier_prices),
        weight=entry.weight,
        order=index if entry.order is None else entry.order,
        context_window=entry.context_window,
        capabilities=None if entry.capabilities is None else frozenset(entry.capabilities),
        deployment=deployment,
        unavailable=None if deployment is not None else "not usable: needs " + ", ".join(lacking),
        by_tier={} if deployment is None else {
            tier: msgspec.structs.replace(deployment, native_tier=entry.native_tiers.get(tier),
                                          timeouts=_timeouts_at(entry, tier, entry.timeouts or provider.timeouts))
            for tier in entry.tiers},
    )


def _timeouts_at(entry: DeploymentConfig, tier: Tier, base: Timeouts) -> Timeouts:
    explicit = entry.tier_timeouts.get(tier)
    if explicit is not None:
        return explicit
    if tier == "flex":
        return msgspec.structs.replace(base, first_byte=base.first_byte * FLEX_TIMEOUT_FACTOR,
                                       total=base.total * FLEX_TIMEOUT_FACTOR)
    return base
