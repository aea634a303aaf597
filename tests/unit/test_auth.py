"""``KeyRing``: a key is hashed once per key ring; wrong keys are never remembered."""

from __future__ import annotations

import msgspec
import pytest

from proxy import auth
from proxy.auth import KeyRing
from proxy.errors import AuthenticationFailed
from proxy.settings import default_config_path, load_settings


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key ``proxy.auth`` hashes, in order."""
    seen: list[str] = []
    real = auth.hash_key

    def counting(key: str) -> str:
        seen.append(key)
        return real(key)

    monkeypatch.setattr(auth, "hash_key", counting)
    return seen


def test_a_key_is_hashed_once_then_remembered(hashes: list[str]) -> None:
    ring = KeyRing(load_settings(default_config_path()))
    first = ring.authenticate("Bearer sk-interlock-demo")
    assert ring.authenticate("bearer  sk-interlock-demo ") == first
    assert first.team == "demo"
    assert hashes == ["sk-interlock-demo"]


def test_wrong_keys_are_hashed_every_time_and_not_remembered(hashes: list[str]) -> None:
    ring = KeyRing(load_settings(default_config_path()))
    for _ in range(3):
        with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
            ring.authenticate("Bearer sk-wrong")
    assert hashes == ["sk-wrong"] * 3
    # A right key still works afterwards, and a prefix of it does not.
    assert ring.authenticate("Bearer sk-interlock-demo").team == "demo"
    with pytest.raises(AuthenticationFailed):
        ring.authenticate("Bearer sk-interlock-dem")


def test_a_new_key_ring_forgets_keys_removed_from_its_settings() -> None:
    settings = load_settings(default_config_path())
    assert KeyRing(settings).authenticate("Bearer sk-interlock-demo").team == "demo"
    without_demo = {team: config for team, config in settings.teams.items() if team != "demo"}
    ring = KeyRing(msgspec.structs.replace(settings, teams=without_demo))
    with pytest.raises(AuthenticationFailed):
        ring.authenticate("Bearer sk-interlock-demo")
