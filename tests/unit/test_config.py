"""Configuration files: typed decoding, file:path: reason errors, secrets by reference only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policies.catalogue import Catalogue
from proxy.auth import KeyRing, hash_key
from proxy.errors import AuthenticationFailed
from proxy.settings import ConfigError, default_config_path, load_settings

EXAMPLE = default_config_path()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_example_config_is_valid() -> None:
    settings = load_settings(EXAMPLE)
    assert "sim" in settings.models and "demo" in settings.teams


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("listen: {port: nope}", "$.listen.port", "Expected `int`"),
    ("bogus: 1", "$", "unknown field `bogus`"),
    ("providers: {p: {dialect: carrier-pigeon, base_url: x}}", "$.providers.p.dialect", "Invalid enum value"),
    ("providers: {}\nmodels: {m: {deployments: [{provider: ghost, model: x}]}}",
     "$.models.m.deployments[0].provider", "unknown provider 'ghost'"),
    ("teams: {t: {keys: [{sha256: not-a-digest}]}}", "$.teams.t.keys[0].sha256", "not a hex SHA-256"),
    ("models: [1, 2", ":1", "invalid YAML"),
])
def test_invalid_file_names_file_path_and_reason(tmp_path: Path, text: str, where: str, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert where in message and reason in message, message


def test_environment_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PORT", "9999")
    path = _write(tmp_path, "listen: {port: ${TEST_PORT}, host: ${TEST_HOST:-127.0.0.2}}")
    settings = load_settings(path)
    assert settings.listen.port == 9999 and settings.listen.host == "127.0.0.2"


def test_provider_key_comes_from_environment_and_is_never_shown() -> None:
    settings = load_settings(EXAMPLE)
    env = {"OPENAI_API_KEY": "sk-live-secret-value"}
    catalogue = Catalogue(settings, simulator_url="http://127.0.0.1:1", environ=env.get)
    model = catalogue.get("gpt-4o")
    assert model is not None
    deployment = model.deployments[0]
    assert deployment.api_key == "sk-live-secret-value"
    assert "sk-live" not in repr(deployment) and "sk-live" not in repr(model)
    assert catalogue.get("llama-3.3-70b") is None, "no GROQ/TOGETHER key: not served"
    assert "GROQ_API_KEY" in catalogue.unavailable()["llama-3.3-70b"]


def test_keys_are_hashed_and_map_to_teams() -> None:
    settings = load_settings(EXAMPLE)
    ring = KeyRing(settings)
    assert ring.authenticate("Bearer sk-interlock-demo").team == "demo"
    assert ring.authenticate("bearer sk-interlock-other").team == "other"
    for header in (None, "", "Bearer nope", "Token sk-interlock-demo"):
        with pytest.raises(AuthenticationFailed):
            ring.authenticate(header)
    assert hash_key("sk-interlock-demo") in EXAMPLE.read_text()
    assert "sk-interlock-demo\n" not in EXAMPLE.read_text().replace('"sk-interlock-demo"', "")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_command(tmp_path: Path) -> None:
    good = _cli("check", "--config", str(EXAMPLE))
    assert good.returncode == 0 and "ok" in good.stdout
    bad = _cli("check", "--config", str(_write(tmp_path, "listen: {workers: many}")))
    assert bad.returncode == 1
    assert f"{tmp_path / 'gateway.yaml'}:$.listen.workers: Expected `int`" in bad.stderr


def test_hash_key_command() -> None:
    result = _cli("hash-key", "abc")
    assert result.returncode == 0 and result.stdout.strip() == hash_key("abc")
