"""The model catalogue: aliases clients ask for, and the deployments that can serve them."""

from __future__ import annotations

import os
from collections.abc import Callable

from msgspec import Struct

from proxy.schema.response import ModelObject
from proxy.schema.upstream import Deployment
from proxy.settings import ModelConfig, Settings

EMBEDDED_SIMULATOR = "embedded"


class CatalogueModel(Struct, kw_only=True):
    alias: str
    endpoints: list[str]
    owned_by: str
    deployments: list[Deployment]
    """Only those whose credentials are present, in preference order."""
    unavailable_reason: str | None = None


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
        missing: list[str] = []
        for index, entry in enumerate(model.deployments):
            provider = settings.providers[entry.provider]
            key = environ(provider.api_key_env) if provider.api_key_env else None
            if provider.api_key_env and not key:
                missing.append(provider.api_key_env)
                continue
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
                missing.extend(lacking)
                continue
            base_url = provider.base_url
            if base_url.startswith(EMBEDDED_SIMULATOR):
                if simulator_url is None:
                    missing.append("the embedded simulator (simulator.embedded is false)")
                    continue
                # "embedded" alone is the simulator's /v1; "embedded/v1beta" names another base path.
                base_url = simulator_url + (base_url[len(EMBEDDED_SIMULATOR):] or "/v1")
            deployments.append(Deployment(
                name=f"{alias}#{index}:{entry.provider}/{entry.model}",
                provider=entry.provider,
                dialect=provider.dialect,
                base_url=base_url,
                model=entry.model,
                api_key=key,
                auth=provider.auth if key else "none",
                credentials=credentials,
                region=provider.region,
                options=dict(provider.options),
                headers=dict(provider.headers),
                query=dict(provider.query),
                quirks=entry.quirks or provider.quirks,
                timeouts=entry.timeouts or provider.timeouts,
            ))
        reason = None if deployments else "no deployment has credentials: set " + ", ".join(sorted(set(missing)))
        return CatalogueModel(alias=alias, endpoints=list(model.endpoints), owned_by=model.owned_by,
                              deployments=deployments, unavailable_reason=reason)

    def get(self, alias: str) -> CatalogueModel | None:
        """The model if it exists and has at least one usable deployment."""
        model = self._models.get(alias)
        return model if model is not None and model.deployments else None

    def listed(self) -> list[ModelObject]:
        return [ModelObject(id=m.alias, created=self.created, owned_by=m.owned_by, endpoints=m.endpoints)
                for m in self._models.values() if m.deployments]

    def unavailable(self) -> dict[str, str]:
        """Aliases that cannot be served and why (shown by ``interlock check``)."""
        return {m.alias: m.unavailable_reason for m in self._models.values() if m.unavailable_reason}
