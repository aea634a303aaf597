"""How changes reach running pods (a rolling restart for the gateway file, a hot reload for team
policies) and how a pod goes away (endpoints drained first, open streams allowed to finish)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

from policies.teams import PolicyStore
from tests.helm.chart import ROOT, Rendered, render, write_configmap_volume, write_mounts

SEARCH_KEY = {"sha256": "d3b4fb2985526bbda61ad60b4d0117f1b65eeeaf11445575607b56588e4591d8", "name": "web"}


def _annotations(release: Rendered) -> dict[str, str]:
    return dict(release.pod["metadata"]["annotations"])


def _policies(rpm: int) -> dict[str, Any]:
    return {"policies": {"search": {"keys": [SEARCH_KEY], "limits": {"team": {"rpm": rpm}}}}}


def test_config_checksum_rolls_the_deployment_only_when_the_gateway_file_changes() -> None:
    base = _annotations(render())["checksum/config"]
    assert _annotations(render())["checksum/config"] == base  # the random seal key is not part of it
    changed = render({"config": {"retry": {"attempts": 3}}})
    assert _annotations(changed)["checksum/config"] != base
    assert _annotations(render({"workers": 2}))["checksum/config"] != base  # listen.workers is in the file
    assert _annotations(render(_policies(100)))["checksum/config"] == base  # policies are hot-reloaded


def test_policy_changes_roll_the_deployment_when_asked() -> None:
    assert "checksum/policies" not in _annotations(render(_policies(100)))
    rolled = [_annotations(render({**_policies(rpm), "policiesRolloutOnChange": True})) for rpm in (100, 200)]
    assert rolled[0]["checksum/policies"] != rolled[1]["checksum/policies"]
    assert rolled[0]["checksum/config"] == rolled[1]["checksum/config"]


def test_gateway_file_is_pinned_per_pod_and_policies_are_a_live_directory(default_release: Rendered) -> None:
    mounts = {m["name"]: m for m in default_release.container["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/interlock/gateway.yaml",
                                "subPath": "gateway.yaml", "readOnly": True}
    assert mounts["policies"] == {"name": "policies", "mountPath": "/etc/interlock/policies", "readOnly": True}
    volumes = {v["name"]: v for v in default_release.pod["spec"]["volumes"]}
    assert volumes["policies"]["configMap"] == {"name": "gw-interlock-policies"}
    # the file's policies_dir, relative to the file, is where the directory is mounted
    assert default_release.gateway_config()["policies_dir"] == "policies"


async def test_policy_configmap_update_is_hot_reloaded(tmp_path: Path) -> None:
    before = render(_policies(100))
    gateway = write_mounts(before, tmp_path)
    store = PolicyStore.open(gateway, environ=lambda _: None)
    assert store.current.teams == ["search"]
    assert store.current.team_policy("search").team_quota.rpm == 100
    watcher = asyncio.create_task(store.watch(interval=0.05))
    try:
        after = render({"policies": {**_policies(250)["policies"], "batch": "models: [sim]\n"}})
        # kubelet swaps the ..data symlink to a new hidden directory and deletes the old one
        write_configmap_volume(tmp_path / "policies", after.policy_files(), version="..2026_01_01_00_05_00.2")
        async with asyncio.timeout(10):
            while store.current.teams != ["batch", "search"]:
                await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    assert store.current.team_policy("search").team_quota.rpm == 250
    assert sorted(p.name for p in (tmp_path / "policies").iterdir() if not p.name.startswith(".")) == [
        "batch.yaml", "search.yaml"]


def _uvicorn_graceful_shutdown_seconds() -> int:
    """``timeout_graceful_shutdown`` as ``interlock serve`` passes it to uvicorn (proxy/cli.py)."""
    tree = ast.parse((ROOT / "proxy" / "cli.py").read_text())
    values = [keyword.value for node in ast.walk(tree) if isinstance(node, ast.Call)
              for keyword in node.keywords if keyword.arg == "timeout_graceful_shutdown"]
    (value,) = values
    assert isinstance(value, ast.Constant) and isinstance(value.value, int), "interlock serve's timeout moved"
    return value.value


def test_termination_outlasts_endpoint_drain_and_open_streams(default_release: Rendered) -> None:
    for release, drain in ((default_release, 10), (render({"shutdown": {"drainSeconds": 25}}), 25)):
        assert release.container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", str(drain)]}}
        grace = release.pod["spec"]["terminationGracePeriodSeconds"]
        # SIGTERM comes after the preStop sleep; uvicorn then lets streams run this long, and the
        # lifespan closes the store and sessions in the margin left before SIGKILL
        assert grace == drain + _uvicorn_graceful_shutdown_seconds() + 10


def test_rolling_update_never_drops_below_the_desired_pods(default_release: Rendered) -> None:
    strategy = default_release.one("Deployment")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
