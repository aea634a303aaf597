"""Resolution key > team > global: field by field, lists replaced whole, the source recorded."""

from __future__ import annotations

import msgspec

from policies.resolve import resolve, rules_of
from policies.rules import BUILTIN, KeyEntry, Rules


def _rules(**fields: object) -> Rules:
    return msgspec.convert(fields, Rules)


GLOBAL = _rules(models=["*"], tools=["search"], max_tool_calls=20, store=True,
                service_tier={"default": "default", "max": "default"},
                limits={"key": {"rpm": 60}, "team": {"rpm": 600, "daily_budget": 100}, "fail_mode": "open"})
TEAM = _rules(models=["gpt", "pool"], service_tier={"max": "priority"},
              limits={"team": {"rpm": 300}, "models": {"gpt*": {"tpm": 1000}}})
KEY = _rules(models=["gpt"], store=False, limits={"key": {"rpm": 5}, "fail_mode": "closed"})


def test_builtin_defaults_apply_when_nothing_is_said() -> None:
    policy = resolve("t", None, [])
    assert policy.models == ("*",) and policy.tools == () and policy.store is True
    assert (policy.default_tier, policy.max_tier, policy.above_max) == ("default", "priority", "cap")
    assert policy.fail_mode == "open" and policy.max_tool_calls is None
    assert policy.key_quota.rpm is None and policy.model_quotas == {}
    assert policy.source("models") == "default"


def test_key_beats_team_beats_global_field_by_field() -> None:
    policy = resolve("t", "k", [("global", GLOBAL), ("team", TEAM), ("key", KEY)])
    assert policy.models == ("gpt",) and policy.source("models") == "key"
    assert policy.store is False and policy.source("store") == "key"
    assert policy.max_tier == "priority" and policy.source("service_tier.max") == "team"
    assert policy.default_tier == "default" and policy.source("service_tier.default") == "global"
    assert policy.key_quota.rpm == 5 and policy.source("limits.key.rpm") == "key"
    # A quota merges per field: the team's rpm replaces the global one, the budget stays.
    assert policy.team_quota.rpm == 300 and policy.team_quota.daily_budget == 100
    assert policy.source("limits.team.daily_budget") == "global"
    assert policy.model_quotas["gpt*"].tpm == 1000 and policy.source("limits.models.gpt*.tpm") == "team"
    assert policy.fail_mode == "closed"
    assert policy.tools == ("search",) and policy.max_tool_calls == 20


def test_team_rules_without_the_key_layer() -> None:
    policy = resolve("t", None, [("global", GLOBAL), ("team", TEAM)])
    assert policy.models == ("gpt", "pool") and policy.key_quota.rpm == 60 and policy.store is True


def test_lists_are_replaced_not_extended() -> None:
    policy = resolve("t", None, [("global", _rules(providers={"deny": ["a", "b"]})),
                                 ("team", _rules(providers={"deny": ["c"]}))])
    assert policy.deny_providers == ("c",)
    assert policy.allow_providers == ("*",)


def test_merging_leaves_the_layers_untouched() -> None:
    before = msgspec.json.encode(BUILTIN), msgspec.json.encode(GLOBAL)
    resolve("t", "k", [("global", GLOBAL), ("team", TEAM), ("key", KEY)])
    assert (msgspec.json.encode(BUILTIN), msgspec.json.encode(GLOBAL)) == before


def test_key_entry_rules_exclude_its_identity() -> None:
    entry = msgspec.convert({"sha256": "0" * 64, "name": "ci", "store": False}, KeyEntry)
    rules = rules_of(entry)
    assert type(rules) is Rules and rules.store is False


def test_globs_for_models_and_tools() -> None:
    policy = resolve("t", None, [("team", _rules(models=["gpt*", "pool"], tools=["web_*"]))])
    assert policy.allows_model("gpt") and policy.allows_model("gpt-mini") and policy.allows_model("pool")
    assert not policy.allows_model("other")
    assert policy.allows_tool("web_search") and not policy.allows_tool("python")
