"""The shipped example policies and every file in docs/policies.md are valid and mean what they say."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from policies.teams import PolicyStore
from proxy.auth import Principal
from proxy.settings import default_config_path, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"
DOCS = ROOT / "docs" / "policies.md"
README = ROOT / "README.md"
_FILE_BLOCK = re.compile(r"```yaml\n# file: (\S+)\n(.*?)```", re.DOTALL)


def test_example_policies_load_with_the_example_gateway() -> None:
    settings = msgspec.structs.replace(load_settings(default_config_path()), policies_dir=str(EXAMPLES))
    snapshot = PolicyStore(settings, simulator_url="http://127.0.0.1:1").current
    assert set(snapshot.teams) >= {"demo", "research", "other"}
    ci = snapshot.policy(snapshot.keyring.authenticate("Bearer sk-interlock-research-ci"))
    assert ci == snapshot.policy(Principal(team="research", key_name="ci"))
    assert ci.models == ("sim",) and ci.key_quota.rpm == 10 and ci.default_tier == "flex" and not ci.store
    demo = snapshot.policy(snapshot.keyring.authenticate("Bearer sk-interlock-demo"))
    assert demo.model_quotas["gpt-4o*"].daily_budget == 20 and demo.deny_providers == ("openrouter",)


def test_the_documented_files_load_together(tmp_path: Path) -> None:
    files = _FILE_BLOCK.findall(DOCS.read_text())
    assert {name for name, _ in files} >= {"gateway.yaml", "policies/search.yaml", "policies/batch.yaml"}
    for name, text in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    store = PolicyStore.open(tmp_path / "gateway.yaml", environ=lambda _: "sk-test")
    assert store.current.teams == ["batch", "search"]
    search = store.current.team_policy("search", "web")
    assert search.regions == ("eu-*",) and search.source("regions") == "team"



def test_the_readme_example_loads(tmp_path: Path) -> None:
    files = _FILE_BLOCK.findall(README.read_text())
    assert {name for name, _ in files} == {"gateway.yaml", "policies/search.yaml"}
    for name, text in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    snapshot = PolicyStore.open(tmp_path / "gateway.yaml", environ=lambda _: "sk-test").current
    batch = snapshot.policy(snapshot.keyring.authenticate("Bearer sk-search-batch"))
    assert batch.default_tier == "flex" and batch.key_quota.rpm == 600 and batch.team_quota.daily_budget == 300
    assert snapshot.catalogue.get("gpt-4o") is not None
