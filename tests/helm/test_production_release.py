"""ci/production-values.yaml: external Redis (Sentinel), secrets by reference, autoscaling, a
disruption budget, network policies, the sandbox's namespaces mode and Prometheus scraping."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.teams import PolicyStore
from tests.helm.chart import FULLNAME, Rendered, render, write_mounts

REDIS_PASSWORD = "s3cret"


def test_renders_no_bundled_redis_and_no_generated_secret(production_release: Rendered) -> None:
    kinds = {kind for kind, _ in production_release.names()}
    assert {"StatefulSet", "Secret"}.isdisjoint(kinds)
    assert {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor", "PodDisruptionBudget"} <= kinds


def test_gateway_file_and_team_policies_load_as_mounted(
    production_release: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERLOCK_REDIS_PASSWORD", REDIS_PASSWORD)
    gateway = write_mounts(production_release, tmp_path / "etc" / "interlock")
    store = PolicyStore.open(gateway, environ=lambda name: "sk-test" if name.endswith("_API_KEY") else None)
    settings = store.current.settings
    assert settings.store == f"redis://:{REDIS_PASSWORD}@redis-master.redis.svc:6379/0"
    assert settings.limits_store is not None
    assert settings.limits_store.startswith(f"redis+sentinel://:{REDIS_PASSWORD}@redis-sentinel-0.redis.svc:26379,")
    assert settings.limits_store.endswith("/mymaster/0")
    assert settings.listen.workers == 2 and settings.max_body_bytes == 33554432
    assert set(settings.models) == {"gpt-4o", "claude-sonnet-4.5"}  # the default "sim" was removed with null
    assert store.current.teams == ["batch", "search"]
    assert store.current.team_policy("batch").default_tier == "flex"
    assert store.current.policy(store.current.keyring.authenticate("Bearer sk-search-web")).team == "search"


def test_secrets_are_referenced_never_written(production_release: Rendered) -> None:
    env = production_release.env()
    refs = {name: entry["valueFrom"]["secretKeyRef"] for name, entry in env.items()}
    assert refs == {
        "INTERLOCK_SEAL_KEY": {"name": "interlock-seal", "key": "seal-key"},
        "INTERLOCK_REDIS_PASSWORD": {"name": "redis-auth", "key": "password"},
        "OPENAI_API_KEY": {"name": "llm-provider-keys", "key": "openai"},
        "ANTHROPIC_API_KEY": {"name": "llm-provider-keys", "key": "anthropic"},
    }
    assert "${INTERLOCK_REDIS_PASSWORD}" in production_release.gateway_file()


def test_autoscaler_owns_the_replica_count(production_release: Rendered) -> None:
    assert "replicas" not in production_release.one("Deployment")["spec"]
    hpa = production_release.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 60, "memory": 80}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_disruption_budget_keeps_two_pods(production_release: Rendered) -> None:
    spec = production_release.one("PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec


def test_network_policy_admits_clients_and_lets_out_dns_providers_and_redis(production_release: Rendered) -> None:
    (policy,) = production_release.all("NetworkPolicy")  # no bundled Redis, so no policy for it
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == production_release.one("Service")["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert [peer["namespaceSelector"]["matchLabels"] for peer in ingress["from"]] == [
        {"interlock-client": "true"}, {"kubernetes.io/metadata.name": "monitoring"}]
    ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"]) for rule in spec["egress"]]
    assert ports == [[(53, "TCP"), (53, "UDP")], [(443, "TCP")], [(6379, "TCP"), (26379, "TCP")]]


def test_bundled_redis_gets_its_own_policy_when_enabled() -> None:
    release = render({"networkPolicy": {"enabled": True}})
    gateway, redis = (release.one("NetworkPolicy", name) for name in (FULLNAME, f"{FULLNAME}-redis"))
    redis_labels = release.one("StatefulSet", f"{FULLNAME}-redis")["spec"]["template"]["metadata"]["labels"]
    to_redis = [rule for rule in gateway["spec"]["egress"] if "to" in rule]
    assert to_redis == [{"to": [{"podSelector": {"matchLabels": redis["spec"]["podSelector"]["matchLabels"]}}],
                         "ports": [{"port": 6379, "protocol": "TCP"}]}]
    assert redis["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (admitted,) = redis["spec"]["ingress"]
    assert admitted["from"] == [{"podSelector": {"matchLabels": gateway["spec"]["podSelector"]["matchLabels"]}}]
    assert redis["spec"]["egress"] == []


def test_sandbox_namespaces_mode_gets_exactly_what_it_needs(production_release: Rendered) -> None:
    spec = production_release.pod["spec"]
    assert spec["hostUsers"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "Localhost",
                                                         "localhostProfile": "profiles/interlock-sandbox.json"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert production_release.container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "appArmorProfile": {"type": "Unconfined"}, "procMount": "Unmasked"}


def test_metrics_are_scraped_through_the_service(production_release: Rendered) -> None:
    monitor = production_release.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= production_release.one("Service")["metadata"][
        "labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s",
                                             "scrapeTimeout": "10s"}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["llm"]}


def test_pod_annotations_for_annotation_based_scraping() -> None:
    annotations = render({"metrics": {"podAnnotations": True}}).pod["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}


def test_topology_spread_counts_the_gateway_pods(production_release: Rendered) -> None:
    (constraint,) = production_release.pod["spec"]["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"
    assert constraint["labelSelector"]["matchLabels"] == production_release.one("Service")["spec"]["selector"]


def test_resources_and_priority(production_release: Rendered) -> None:
    assert production_release.container["resources"] == {"requests": {"cpu": "2", "memory": "1Gi"},
                                                          "limits": {"memory": "2Gi"}}
    assert production_release.pod["spec"]["priorityClassName"] == "platform-critical"
    assert production_release.container["image"] == "registry.example.com/platform/interlock:0.1.0"


def test_notes_point_at_the_sandbox_log_line(production_release: Rendered) -> None:
    assert '"tool sandbox: namespaces"' in production_release.notes
    assert "rlimits-only" not in production_release.notes
    assert "bundled" not in production_release.notes
