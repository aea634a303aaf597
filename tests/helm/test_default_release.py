"""`helm install` with the chart's own values: a gateway that works out of the box with the
bundled Redis, restricted pod security, and the gateway file it expects."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from proxy.settings import load_settings
from tests.helm.chart import FULLNAME, Rendered, render

REDIS = f"{FULLNAME}-redis"


def test_renders_the_gateway_and_the_bundled_redis(default_release: Rendered) -> None:
    assert default_release.names() == sorted([
        ("ConfigMap", FULLNAME), ("ConfigMap", f"{FULLNAME}-policies"), ("Deployment", FULLNAME),
        ("PodDisruptionBudget", FULLNAME), ("Secret", f"{FULLNAME}-seal"), ("Service", FULLNAME),
        ("Service", REDIS), ("ServiceAccount", FULLNAME), ("StatefulSet", REDIS),
    ])  # fmt: skip


def test_gateway_file_is_valid_and_uses_the_bundled_redis(default_release: Rendered, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(default_release.gateway_file())
    settings = load_settings(path)
    assert settings.store == f"redis://{REDIS}:6379/0"
    assert settings.limits_store is None  # limits share the store's Redis
    assert (settings.listen.host, settings.listen.port, settings.listen.workers) == ("0.0.0.0", 8080, 1)
    assert settings.policies_dir == "policies"
    assert "sim" in settings.models  # the simulator answers without provider keys


def test_service_reaches_the_gateway_pods_only(default_release: Rendered) -> None:
    service = default_release.one("Service")
    gateway_labels = default_release.pod["metadata"]["labels"]
    redis_labels = default_release.one("StatefulSet", REDIS)["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"].items()
    assert selector <= gateway_labels.items() and not selector <= redis_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert default_release.container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    redis_service = default_release.one("Service", REDIS)
    assert redis_service["spec"]["selector"].items() <= redis_labels.items()
    assert not redis_service["spec"]["selector"].items() <= gateway_labels.items()


def test_probes_use_the_health_endpoints(default_release: Rendered) -> None:
    container = default_release.container
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_runs_interlock_serve_from_the_image_of_the_app_version(default_release: Rendered) -> None:
    container = default_release.container
    assert container["image"] == "interlock:0.1.0"
    assert container["command"] == ["interlock"]
    assert container["args"] == ["serve", "--config", "/etc/interlock/gateway.yaml", "--log-level", "info"]
    assert default_release.one("Deployment")["spec"]["replicas"] == 2


def test_pod_security_is_restricted_by_default(default_release: Rendered) -> None:
    spec = default_release.pod["spec"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                       "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    assert default_release.container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert "hostUsers" not in spec
    assert spec["automountServiceAccountToken"] is False
    assert default_release.one("ServiceAccount")["automountServiceAccountToken"] is False
    mounts = {m["name"]: m["mountPath"] for m in default_release.container["volumeMounts"]}
    assert mounts["tmp"] == "/tmp"  # the only writable place: the sandbox stages its root there


def test_seal_key_is_generated_once_and_kept(default_release: Rendered) -> None:
    secret = default_release.one("Secret", f"{FULLNAME}-seal")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(base64.b64decode(secret["data"]["seal-key"]), validate=True)
    assert len(key) == 32
    assert default_release.env()["INTERLOCK_SEAL_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-seal", "key": "seal-key"}}


def test_bundled_redis_is_one_unprivileged_node(default_release: Rendered) -> None:
    statefulset = default_release.one("StatefulSet", REDIS)
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (redis,) = pod["containers"]
    assert redis["securityContext"]["readOnlyRootFilesystem"] is True
    assert redis["args"][-4:] == ["--save", "", "--appendonly", "no"]  # nothing persisted without a volume
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_bundled_redis_persistence_uses_a_claim() -> None:
    persistent = render({"redis": {"bundled": {"persistence": {"enabled": True, "size": "5Gi"}}}})
    statefulset = persistent.one("StatefulSet", REDIS)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "volumes" not in statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--appendonly", "yes"]


@pytest.mark.parametrize("kind", ["HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"])
def test_optional_objects_are_off(default_release: Rendered, kind: str) -> None:
    assert default_release.all(kind) == []


def test_disruption_budget_allows_one_pod_down(default_release: Rendered) -> None:
    pdb = default_release.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == default_release.one("Service")["spec"]["selector"]


def test_notes_say_how_to_add_a_team_and_warn_about_the_bundled_redis(default_release: Rendered) -> None:
    assert "interlock hash-key" in default_release.notes
    assert "set redis.mode=external for production" in default_release.notes
    assert "kubectl -n llm port-forward svc/gw-interlock 8080:80" in default_release.notes


def test_notes_warn_that_registered_tools_run_degraded_without_the_sandbox_settings() -> None:
    tool = {"name": "clock", "description": "The time.", "kind": "python", "target": "tools.builtin.clock:now",
            "parameters": {"type": "object"}}
    notes = render({"config": {"tools": [tool]}}).notes
    assert "rlimits-only" in notes and "sandbox.namespaces.enabled=false" in notes
