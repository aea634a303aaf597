"""The policy vocabulary: what the gateway's ``policy`` section, a team file and a key entry may say.

Every rule is optional (``None``: inherit). Three layers are merged, most specific last:
the built-in defaults (``BUILTIN``), the gateway's ``policy`` section (global), the team's file,
then the key's entry. A layer replaces what it sets; blocks (``providers``, ``service_tier``,
``limits`` and each quota in it) merge field by field; lists are replaced whole.

This module imports nothing from the rest of the gateway: ``proxy.settings`` types its
``policy`` section with ``Rules``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Tier = Literal["default", "flex", "priority"]
"""A tier a deployment serves. A request may also ask for ``auto`` (the team's default)."""
TIER_RANK: dict[str, int] = {"flex": 0, "default": 1, "priority": 2}
"""Cheapest first; a team's ``max`` caps requests by this order."""
FailMode = Literal["open", "closed"]
AboveMax = Literal["cap", "reject"]


class Quota(Struct, kw_only=True, forbid_unknown_fields=True):
    """Limits of one scope. Rates are token buckets holding a minute's worth, refilled evenly."""

    rpm: Annotated[int, Meta(ge=1)] | None = None
    """Requests per minute."""
    tpm: Annotated[int, Meta(ge=1)] | None = None
    """Tokens (input + output) per minute, counted from the upstream's usage after each response."""
    daily_budget: Annotated[float, Meta(ge=0)] | None = None
    """Spend per UTC day in the gateway's ``currency``; requests are refused once it is reached."""
    monthly_budget: Annotated[float, Meta(ge=0)] | None = None
    """Spend per UTC calendar month in the gateway's ``currency``."""


class LimitRules(Struct, kw_only=True, forbid_unknown_fields=True):
    key: Quota | None = None
    """Each API key of the team on its own."""
    team: Quota | None = None
    """All of the team's keys together."""
    models: dict[str, Quota] | None = None
    """Per model alias glob (``gpt-4o*``): the team's requests to aliases matching it, together.
    Every matching glob applies."""
    fail_mode: FailMode | None = None
    """When the limits store (Redis) is unreachable: ``open`` serves without limits, ``closed``
    refuses with 503 until it is back."""


class TierRules(Struct, kw_only=True, forbid_unknown_fields=True):
    default: Tier | None = None
    """The tier of requests that send no ``service_tier`` or ``auto``."""
    max: Tier | None = None
    """The highest tier the team may ask for (flex < default < priority)."""
    above_max: AboveMax | None = None
    """Asking above ``max``: ``cap`` serves at ``max``, ``reject`` answers 403."""
    flex_max_wait_s: Annotated[float, Meta(ge=0)] | None = None
    """How long a flex request may wait for capacity (429/503 with retry-after) on one deployment
    before moving on."""


class ProviderRules(Struct, kw_only=True, forbid_unknown_fields=True):
    allow: list[str] | None = None
    """Provider globs the team may use."""
    deny: list[str] | None = None
    """Provider globs the team may never use; deny wins over allow."""
    prefer: list[str] | None = None
    """Provider globs in preference order; providers matching none come after, in catalogue order."""


class Rules(Struct, kw_only=True, forbid_unknown_fields=True):
    models: list[str] | None = None
    """Model alias globs the team may ask for."""
    providers: ProviderRules | None = None
    regions: list[str] | None = None
    """Region globs deployments must be in; ``*`` also admits deployments without a region."""
    service_tier: TierRules | None = None
    limits: LimitRules | None = None
    tools: list[str] | None = None
    """Globs of server-side tools the gateway may run for the team."""
    max_tool_calls: Annotated[int, Meta(ge=1)] | None = None
    """Ceiling on a response's tool calls; a request asking for more (or nothing) gets this."""
    store: bool | None = None
    """Whether responses may be stored. When false, ``store: true`` and ``background: true`` get
    403 and requests that do not say are not stored."""


RULE_FIELDS: tuple[str, ...] = Rules.__struct_fields__


class KeyEntry(Rules, kw_only=True, forbid_unknown_fields=True):
    """An API key of a team file; the rules it sets override the team's for requests with it."""

    sha256: str
    """Hex SHA-256 of the key (``interlock hash-key``); the key itself is never stored."""
    name: str = ""
    """A label for logs, limits and usage, unique in the team; defaults to the digest's first 8."""


class TeamFile(Rules, kw_only=True, forbid_unknown_fields=True):
    """``<policies_dir>/<team>.yaml``: the team's keys and its rules."""

    keys: list[KeyEntry] = msgspec.field(default_factory=list)


BUILTIN = Rules(
    models=["*"],
    providers=ProviderRules(allow=["*"], deny=[], prefer=[]),
    regions=["*"],
    service_tier=TierRules(default="default", max="priority", above_max="cap", flex_max_wait_s=60.0),
    limits=LimitRules(key=Quota(), team=Quota(), models={}, fail_mode="open"),
    tools=[],
    store=True,
)
"""What applies where no layer says otherwise. ``max_tool_calls`` has no built-in ceiling (the
tool loop's own ``tool_loop.max_tool_calls`` still applies); no server-side tool runs for a team
unless a layer allows it."""
