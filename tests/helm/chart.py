"""Render helm/interlock with Helm's own engine and read the result back.

helm-python-sdk (import ``helm_python``) binds Helm's Go library, so rendering, schema checks and
lint are Helm's, offline; ``lookup`` sees no cluster.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "interlock"
PRODUCTION_VALUES = CHART_DIR / "ci" / "production-values.yaml"
RELEASE = "gw"
NAMESPACE = "llm"
FULLNAME = "gw-interlock"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    manifests: list[Manifest]
    notes: str

    def all(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str = FULLNAME) -> Manifest:
        found = [m for m in self.all(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)} in {self.names()}"
        return found[0]

    def names(self) -> list[tuple[str, str]]:
        return sorted((m["kind"], m["metadata"]["name"]) for m in self.manifests)

    @property
    def pod(self) -> dict[str, Any]:
        """The gateway Deployment's pod template."""
        template: dict[str, Any] = self.one("Deployment")["spec"]["template"]
        return template

    @property
    def container(self) -> dict[str, Any]:
        (gateway,) = self.pod["spec"]["containers"]
        return dict(gateway)

    def env(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self.container.get("env", [])}

    def gateway_file(self) -> str:
        return str(self.one("ConfigMap")["data"]["gateway.yaml"])

    def gateway_config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.gateway_file())
        return config

    def policy_files(self) -> dict[str, str]:
        return dict(self.one("ConfigMap", f"{FULLNAME}-policies").get("data") or {})


def render(values: dict[str, Any] | None = None) -> Rendered:
    """``helm template gw helm/interlock -n llm`` with ``values`` on top of the chart's own.
    Values the schema refuses raise ``helm_python.HelmValuesError``, as ``helm install`` does."""
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests = [doc for name, text in sorted(files.items()) if not name.endswith("NOTES.txt")
                 for doc in yaml.safe_load_all(text) if doc]
    notes = next(text for name, text in files.items() if name.endswith("NOTES.txt"))
    return Rendered(manifests, notes)


@cache
def _production_values() -> dict[str, Any]:
    return helm.values_from_yaml(PRODUCTION_VALUES.read_text())


def production_values() -> dict[str, Any]:
    """ci/production-values.yaml, a fresh copy each time so tests may change it."""
    return copy.deepcopy(_production_values())


def write_configmap_volume(directory: Path, files: dict[str, str], version: str = "..2026_01_01_00_00_00.1") -> None:
    """Lay ``files`` out as kubelet does for a ConfigMap volume: the data in a timestamped hidden
    directory, a ``..data`` symlink to it and one symlink per key. Called again with another
    ``version``, it swaps ``..data`` atomically and removes the old data, like an update."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / version
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", directory / "..data")
    for link in directory.iterdir():
        if not link.name.startswith(".") and link.name not in files:
            link.unlink()
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    if old is not None:
        for stale in (directory / old).iterdir():
            stale.unlink()
        (directory / old).rmdir()


def write_mounts(rendered: Rendered, config_dir: Path) -> Path:
    """The pod's /etc/interlock: gateway.yaml as a plain file (the chart mounts it by subPath) and
    policies/ as a ConfigMap directory. Returns the gateway file's path."""
    gateway = config_dir / "gateway.yaml"
    config_dir.mkdir(parents=True, exist_ok=True)
    gateway.write_text(rendered.gateway_file())
    write_configmap_volume(config_dir / "policies", rendered.policy_files())
    return gateway
