"""Team policy files: loading, validation as file:path: reason, reload (the old policy stays on
any invalid file), reload on file change and on SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import msgspec
import pytest
import yaml

from policies.teams import PolicyError, PolicyStore
from proxy.auth import Principal, hash_key
from proxy.errors import AuthenticationFailed
from proxy.settings import load_settings
from tests.policies.conftest import CATALOGUE, ENV, TEAM_KEY

RESEARCH_KEY = "sk-policies-research"
CI_KEY = "sk-policies-research-ci"
RESEARCH = f"""
keys:
  - sha256: {hash_key(RESEARCH_KEY)}
    name: laptop
  - sha256: {hash_key(CI_KEY)}
    name: ci
    models: [other]
    limits: {{key: {{rpm: 5}}}}
models: [gpt, "oth*"]
providers: {{deny: [groq]}}
service_tier: {{default: flex, max: default, above_max: reject}}
limits: {{team: {{rpm: 100, daily_budget: 20}}}}
store: false
"""


def _config(tmp_path: Path, **overrides: object) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    document = {**CATALOGUE, "policies_dir": "policies", "policy": {"limits": {"key": {"rpm": 60}}}, **overrides}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _team(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "policies" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _open(config: Path) -> PolicyStore:
    return PolicyStore.open(config, environ=ENV.get)


def test_team_files_resolve_key_over_team_over_global(tmp_path: Path) -> None:
    _team(tmp_path, "research.yaml", RESEARCH)
    snapshot = _open(_config(tmp_path)).current
    assert snapshot.teams == ["research", "team-a"]
    laptop = snapshot.policy(Principal(team="research", key_name="laptop"))
    ci = snapshot.policy(Principal(team="research", key_name="ci"))
    assert laptop.models == ("gpt", "oth*") and ci.models == ("other",)
    assert laptop.key_quota.rpm == 60 and laptop.source("limits.key.rpm") == "global"
    assert ci.key_quota.rpm == 5 and ci.source("limits.key.rpm") == "key"
    assert ci.team_quota.rpm == 100 and ci.deny_providers == ("groq",) and ci.store is False
    assert (ci.default_tier, ci.max_tier, ci.above_max) == ("flex", "default", "reject")
    # a team of the gateway file without a policy file gets the global rules
    main = snapshot.policy(Principal(team="team-a", key_name="main"))
    assert main.models == ("*",) and main.key_quota.rpm == 60 and main.key == "main"
    assert snapshot.team_policy("research").key is None
    assert snapshot.team_policy("nobody") == snapshot.global_policy


def test_keys_of_team_files_authenticate(tmp_path: Path) -> None:
    _team(tmp_path, "research.yaml", RESEARCH)
    keyring = _open(_config(tmp_path)).current.keyring
    assert keyring.authenticate(f"Bearer {CI_KEY}") == Principal(team="research", key_name="ci")
    assert keyring.authenticate(f"Bearer {TEAM_KEY}") == Principal(team="team-a", key_name="main")
    with pytest.raises(AuthenticationFailed):
        keyring.authenticate("Bearer sk-nobody")


def test_a_team_in_both_places_has_the_keys_of_both(tmp_path: Path) -> None:
    _team(tmp_path, "team-a.yaml", f"keys: [{{sha256: {hash_key('sk-extra')}, name: extra}}]\nstore: false\n")
    snapshot = _open(_config(tmp_path)).current
    assert snapshot.keyring.authenticate("Bearer sk-extra").team == "team-a"
    assert snapshot.policy(Principal(team="team-a", key_name="main")).store is False


@pytest.mark.parametrize(("name", "text", "where", "reason"), [
    ("t.yaml", "limits: {team: {rpm: fast}}", ":$.limits.team.rpm", "Expected `int | null`, got `str`"),
    ("t.yaml", "modles: [gpt]", ":$", "Object contains unknown field `modles`"),
    ("t.yaml", "models: [gpt, nope]", ":$.models[1]", "unknown model 'nope'"),
    ("t.yaml", "providers: {prefer: [openai, azure]}", ":$.providers.prefer[1]", "unknown provider 'azure'"),
    ("t.yaml", "limits: {models: {'claude*': {rpm: 1}}}", ":$.limits.models.claude*", "matches no model"),
    ("t.yaml", "service_tier: {default: priority, max: default}", ":$.service_tier",
     "default tier 'priority' (team) is above the highest tier allowed 'default' (team)"),
    ("t.yaml", "keys: [{sha256: abc}]", ":$.keys[0].sha256", "not a hex SHA-256 digest"),
    ("t.yaml", f"keys: [{{sha256: {hash_key(TEAM_KEY)}}}]", ":$.keys[0].sha256",
     "the key is also a key of team 'team-a'"),
    ("t.yaml", f"keys: [{{sha256: {hash_key('a')}, name: x}}, {{sha256: {hash_key('b')}, name: x}}]",
     ":$.keys[1].name", "key name 'x' is used twice in team 't'"),
    ("t.yaml", f"keys: [{{sha256: {hash_key('a')}, service_tier: {{default: priority, max: flex}}}}]",
     ":$.keys[0].service_tier", "default tier 'priority' (key) is above the highest tier allowed 'flex' (key)"),
    ("t.yaml", "models: [gpt\n", ":2", "invalid YAML"),
    ("bad name.yaml", "{}", "", "the file name must be the team's name"),
])
def test_invalid_files_name_file_path_and_reason(tmp_path: Path, name: str, text: str, where: str,
                                                  reason: str) -> None:
    path = _team(tmp_path, name, text)
    with pytest.raises(PolicyError) as caught:
        _open(_config(tmp_path))
    assert len(caught.value.errors) == 1, caught.value.errors
    assert caught.value.errors[0].startswith(f"{path}{where}: ")
    assert reason in caught.value.errors[0]


def test_key_names_of_the_gateway_file_are_unique_too(tmp_path: Path) -> None:
    keys = [{"sha256": hash_key("one"), "name": "same"}, {"sha256": hash_key("two"), "name": "same"}]
    config = _config(tmp_path, teams={"team-a": {"keys": keys}})
    with pytest.raises(PolicyError) as caught:
        _open(config)
    assert caught.value.errors == [f"{config}:$.teams.team-a.keys[1].name: key name 'same' is used twice in "
                                   "team 'team-a'"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    one = _team(tmp_path, "one.yaml", "models: [nope]")
    two = _team(tmp_path, "two.yaml", "store: maybe")
    with pytest.raises(PolicyError) as caught:
        _open(_config(tmp_path))
    assert [error.split(":")[0] for error in caught.value.errors] == [str(one), str(two)]


def test_global_policy_errors_name_the_gateway_file(tmp_path: Path) -> None:
    config = _config(tmp_path, policy={"service_tier": {"default": "priority", "max": "flex"}, "models": ["x"]})
    with pytest.raises(PolicyError) as caught:
        _open(config)
    assert caught.value.errors == [
        f"{config}:$.policy.models[0]: unknown model 'x'",
        f"{config}:$.policy.service_tier: default tier 'priority' (global) is above the highest tier "
        "allowed 'flex' (global)",
    ]


def test_a_missing_policies_dir_is_an_error(tmp_path: Path) -> None:
    config = _config(tmp_path, policies_dir="elsewhere")
    with pytest.raises(PolicyError, match="elsewhere: policies_dir is not a directory"):
        _open(config)


def test_hidden_entries_and_other_files_are_ignored(tmp_path: Path) -> None:
    _team(tmp_path, ".research.yaml", "bogus: 1")
    _team(tmp_path, "README.md", "# not a policy")
    (tmp_path / "policies" / "..data").mkdir()
    assert _open(_config(tmp_path)).current.teams == ["team-a"]


def test_reload_swaps_the_snapshot(tmp_path: Path) -> None:
    store = _open(_config(tmp_path))
    before = store.current
    _team(tmp_path, "research.yaml", RESEARCH)
    assert store.reload() == []
    assert store.current is not before and "research" in store.current.teams
    assert "research" not in before.teams  # a request holding the old snapshot is undisturbed


def test_an_invalid_reload_keeps_the_old_policy(tmp_path: Path) -> None:
    path = _team(tmp_path, "research.yaml", RESEARCH)
    store = _open(_config(tmp_path))
    before = store.current
    path.write_text(RESEARCH.replace("rpm: 100", "rpm: -1"))
    errors = store.reload()
    assert errors == [f"{path}:$.limits.team.rpm: Expected `int` >= 1"]
    assert store.current is before
    assert store.current.team_policy("research").team_quota.rpm == 100


def test_reload_rereads_the_catalogue(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = _open(config)
    document = yaml.safe_load(config.read_text())
    document["models"]["gpt"]["deployments"][0]["weight"] = 5
    config.write_text(yaml.safe_dump(document))
    assert store.reload() == []
    model = store.current.catalogue.find("gpt")
    assert model is not None and model.specs[0].weight == 5
    document["models"]["gpt"]["deployments"][0]["weight"] = -5
    config.write_text(yaml.safe_dump(document))
    assert store.reload() == [f"{config}:$.models.gpt.deployments[0].weight: Expected `float` > 0.0"]
    assert store.current.catalogue.find("gpt").specs[0].weight == 5


def test_start_up_with_settings_and_no_config_file(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path))
    directory = tmp_path / "policies"
    store = PolicyStore(msgspec.structs.replace(settings, policies_dir=str(directory)), environ=ENV.get)
    _team(tmp_path, "research.yaml", RESEARCH)
    assert store.reload() == [] and "research" in store.current.teams


async def test_watch_reloads_when_a_file_changes(tmp_path: Path) -> None:
    path = _team(tmp_path, "research.yaml", RESEARCH)
    store = _open(_config(tmp_path))
    watcher = asyncio.create_task(store.watch(interval=0.02))
    try:
        path.write_text(RESEARCH.replace("rpm: 100", "rpm: 7"))
        await _eventually(lambda: store.current.team_policy("research").team_quota.rpm == 7)
        path.unlink()
        await _eventually(lambda: "research" not in store.current.teams)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def test_a_key_removed_by_a_reload_is_refused(tmp_path: Path) -> None:
    path = _team(tmp_path, "research.yaml", RESEARCH)
    store = _open(_config(tmp_path))
    principal = store.current.keyring.authenticate(f"Bearer {CI_KEY}")
    path.unlink()
    assert store.reload() == []
    with pytest.raises(AuthenticationFailed):
        store.current.policy(principal)


async def test_watch_survives_a_failing_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _open(_config(tmp_path))
    real_reload, calls = store.reload, []

    def flaky() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return real_reload()

    monkeypatch.setattr(store, "reload", flaky)
    watcher = asyncio.create_task(store.watch(interval=0.02))
    try:
        _team(tmp_path, "research.yaml", RESEARCH)
        await _eventually(lambda: "research" in store.current.teams)
        assert len(calls) >= 2
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_sighup_reloads(tmp_path: Path) -> None:
    store = _open(_config(tmp_path))
    loop = asyncio.get_running_loop()
    store.reload_on_sighup()
    try:
        _team(tmp_path, "research.yaml", RESEARCH)
        os.kill(os.getpid(), signal.SIGHUP)
        await _eventually(lambda: "research" in store.current.teams)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def _eventually(check: object, timeout: float = 5.0) -> None:
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
