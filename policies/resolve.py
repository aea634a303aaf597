"""Resolution key > team > global: merge the layers of ``Rules`` into one ``ResolvedPolicy``.

A layer replaces each rule it sets. Blocks (``providers``, ``service_tier``, ``limits``, each
``Quota`` and each ``limits.models`` entry) merge field by field; lists are replaced whole, so a
team's ``models: [sim]`` is the whole list, not an addition to the global one. A rule can be made
stricter or looser by a more specific layer but not unset: ``None`` always means "inherit".
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, TypeVar

import msgspec
from msgspec import Struct

from policies.rules import (
    BUILTIN,
    RULE_FIELDS,
    TIER_RANK,
    AboveMax,
    FailMode,
    Quota,
    Rules,
    Tier,
)

Layer = tuple[str, Rules]
"""A layer's name (``default``, ``global``, ``team``, ``key``) and its rules."""


class ResolvedPolicy(Struct, frozen=True, kw_only=True):
    """The rules in force for one team (and key), every one of them decided."""

    team: str
    key: str | None
    """The key's name; ``None`` for the team's own rules (explain without a key)."""
    models: tuple[str, ...]
    allow_providers: tuple[str, ...]
    deny_providers: tuple[str, ...]
    prefer_providers: tuple[str, ...]
    regions: tuple[str, ...]
    default_tier: Tier
    max_tier: Tier
    above_max: AboveMax
    flex_max_wait_s: float
    key_quota: Quota
    team_quota: Quota
    model_quotas: dict[str, Quota]
    fail_mode: FailMode
    tools: tuple[str, ...]
    max_tool_calls: int | None
    store: bool
    sources: dict[str, str]
    """Which layer set each rule, by dotted path (``limits.team.rpm``: ``team``)."""

    def source(self, path: str) -> str:
        """The layer that set ``path`` (``default`` when none did)."""
        return self.sources.get(path, "default")

    def allows_model(self, alias: str) -> bool:
        return any(fnmatchcase(alias, pattern) for pattern in self.models)

    def allows_tool(self, name: str) -> bool:
        """Whether the gateway may run the server-side tool ``name`` for this team."""
        return any(fnmatchcase(name, pattern) for pattern in self.tools)


def rules_of(entry: Rules) -> Rules:
    """Only the rules of a ``KeyEntry`` or ``TeamFile`` (not its keys or digest)."""
    if type(entry) is Rules:
        return entry
    return Rules(**{name: getattr(entry, name) for name in RULE_FIELDS})


def resolve(team: str, key: str | None, layers: list[Layer]) -> ResolvedPolicy:
    """Merge ``layers`` (least specific first) over ``BUILTIN``."""
    sources: dict[str, str] = {}
    merged: Rules = _merge(None, BUILTIN, "default", "", sources)
    for name, rules in layers:
        merged = _merge(merged, rules, name, "", sources)
    providers = _given(merged.providers)
    tiers = _given(merged.service_tier)
    limits = _given(merged.limits)
    return ResolvedPolicy(
        team=team,
        key=key,
        models=tuple(_given(merged.models)),
        allow_providers=tuple(_given(providers.allow)),
        deny_providers=tuple(_given(providers.deny)),
        prefer_providers=tuple(_given(providers.prefer)),
        regions=tuple(_given(merged.regions)),
        default_tier=_given(tiers.default),
        max_tier=_given(tiers.max),
        above_max=_given(tiers.above_max),
        flex_max_wait_s=_given(tiers.flex_max_wait_s),
        key_quota=_given(limits.key),
        team_quota=_given(limits.team),
        model_quotas=dict(_given(limits.models)),
        fail_mode=_given(limits.fail_mode),
        tools=tuple(_given(merged.tools)),
        max_tool_calls=merged.max_tool_calls,
        store=_given(merged.store),
        sources=sources,
    )


def tier_conflict(policy: ResolvedPolicy) -> str | None:
    """Why the policy's tier rules contradict each other, if they do."""
    if TIER_RANK[policy.default_tier] > TIER_RANK[policy.max_tier]:
        return (f"default tier '{policy.default_tier}' ({policy.source('service_tier.default')}) is above the "
                f"highest tier allowed '{policy.max_tier}' ({policy.source('service_tier.max')})")
    return None


_T = TypeVar("_T")


def _given(value: _T | None) -> _T:
    """A rule ``BUILTIN`` sets, so every merge has it."""
    if value is None:
        raise AssertionError("BUILTIN leaves a rule unset")
    return value


def _merge(base: Any, over: Any, layer: str, path: str, sources: dict[str, str]) -> Any:
    if over is None:
        return base
    if isinstance(over, Struct):
        merged = base if base is not None else type(over)()
        changes = {}
        for name in over.__struct_fields__:
            value = getattr(over, name)
            if value is not None:
                changes[name] = _merge(getattr(merged, name), value, layer, _join(path, name), sources)
        return msgspec.structs.replace(merged, **changes)
    if isinstance(over, dict):
        result = dict(base or {})
        for name, value in over.items():
            result[name] = _merge(result.get(name), value, layer, _join(path, name), sources)
        return result
    sources[path] = layer
    return over


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
