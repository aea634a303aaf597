"""Helm's lint passes, and values.schema.json refuses values that would deploy a broken gateway."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.helm.chart import CHART_DIR, production_values, render

OLDEST_KUBERNETES = "v1.30.0"  # Chart.yaml's kubeVersion


def _findings(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    report = helm.lint(CHART_DIR, values, strict=True, namespace="llm", kube_version=OLDEST_KUBERNETES)
    assert report["total_charts_linted"] == 1
    return [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors


@pytest.mark.parametrize("values", [None, production_values()], ids=["default", "production"])
def test_lint_is_clean(values: dict[str, Any] | None) -> None:
    assert _findings(values) == []


def test_lint_reports_values_the_schema_refuses() -> None:
    findings = _findings({"replicaCount": 0})
    assert findings and all(m["severity"] == 3 for m in findings)
    assert any("/replicaCount" in m["error"] for m in findings)


def _external(**fields: str) -> dict[str, Any]:
    return {"redis": {"mode": "external", "external": fields}}


@pytest.mark.parametrize(("values", "where", "why"), [
    ({"replicas": 3}, "", "additional properties 'replicas' not allowed"),
    ({"replicaCount": 0}, "/replicaCount", "minimum"),
    # the chart owns these keys of the gateway file
    ({"config": {"store": "sqlite:///./data/interlock.db"}}, "/config/store", "'not' failed"),
    ({"config": {"listen": {"port": 9000}}}, "/config/listen", "'not' failed"),
    ({"config": {"seal_key_env": "MY_KEY"}}, "/config/seal_key_env", "'not' failed"),
    # an external Redis needs its URL, and Cluster cannot hold responses
    (_external(storeUrl=""), "/redis/external/storeUrl", "minLength"),
    (_external(storeUrl="redis+cluster://redis:6379"), "/redis/external/storeUrl", "does not match pattern"),
    (_external(storeUrl="redis://r:6379/0", limitsUrl="memcached://m:11211"), "/redis/external/limitsUrl",
     "does not match pattern"),
    ({"redis": {"external": {"storeUrl": "redis://r:6379/0"}}}, "/redis/external/storeUrl", "value must be ''"),
    ({"redis": {"mode": "sentinel"}}, "/redis/mode", "must be one of"),
    # team policy files are named after their team
    ({"policies": {"../etc": {"models": ["*"]}}}, "", "invalid propertyName '../etc'"),
    ({"policies": {"search": ["gpt-4o"]}}, "/policies/search", "got array"),
    ({"secretEnv": {"OPENAI_API_KEY": {"secretName": "llm-keys"}}}, "/secretEnv/OPENAI_API_KEY",
     "missing property 'key'"),
    ({"secretEnv": {"openai-key": {"secretName": "s", "key": "k"}}}, "", "invalid propertyName 'openai-key'"),
    # RuntimeDefault would forbid the very syscalls the sandbox's namespaces mode is enabled for
    ({"sandbox": {"namespaces": {"enabled": True, "seccompProfile": {"type": "RuntimeDefault"}}}},
     "/sandbox/namespaces/seccompProfile/type", "must be one of"),
    ({"sandbox": {"namespaces": {"enabled": True, "seccompProfile": {"type": "Localhost",
                                                                      "localhostProfile": None}}}},
     "/sandbox/namespaces/seccompProfile", "missing property 'localhostProfile'"),
    ({"shutdown": {"drainSeconds": -1}}, "/shutdown/drainSeconds", "minimum"),
    ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable", "oneOf"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval", "pattern"),
])  # fmt: skip
def test_schema_refuses_invalid_values(values: dict[str, Any], where: str, why: str) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    message = str(refused.value)
    assert f"at '{where}'" in message and why in message, message


def test_autoscaling_bounds_are_checked_when_rendering() -> None:
    with pytest.raises(helm.HelmRenderError, match="minReplicas must not be above"):
        render({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}})
