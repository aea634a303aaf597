"""Catalogue extensions: typed routing facts per deployment, checked with file:path: reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.catalogue import Catalogue
from proxy.settings import ConfigError, load_settings
from tests.policies.conftest import ENV, catalogue_model, settings_with


def test_specs_carry_every_routing_fact() -> None:
    model = catalogue_model("gpt")
    openai, azure, groq, batch, nokey = model.specs
    assert openai.tiers == ("default", "flex", "priority")
    assert openai.native_tiers == {"flex": "flex", "priority": "priority"}
    assert openai.price is not None and openai.price.cached_input == 1.25
    assert openai.tier_prices["flex"].input == 1.25
    assert openai.capabilities == frozenset({"tools", "vision", "reasoning"})
    assert openai.context_window == 128000
    assert openai.upstream == "openai/gpt-4o" and openai.name == "gpt#0:openai/gpt-4o"
    assert azure.region == "eu-west" and groq.region is None
    assert groq.tiers == ("default",) and groq.capabilities is None
    assert batch.tiers == ("flex",)
    assert [spec.order for spec in model.specs] == [0, 1, 2, 3, 4]
    assert nokey.deployment is None and nokey.unavailable == "not usable: needs NOKEY_KEY"
    assert [d.name for d in model.deployments] == [s.name for s in model.specs[:4]]


def test_explicit_order_and_weight() -> None:
    pool = catalogue_model("pool")
    assert [(spec.order, spec.weight) for spec in pool.specs] == [(0, 3.0), (0, 1.0), (1, 1.0)]


def test_deployment_region_is_its_routing_label() -> None:
    settings = settings_with(models={"m": {"deployments": [{"provider": "groq", "model": "x", "region": "ap-south"}]}})
    model = Catalogue(settings, environ=ENV.get).find("m")
    assert model is not None
    assert model.specs[0].region == "ap-south"
    assert model.deployments[0].region == "ap-south"


def test_upstreams_are_the_circuits_to_watch() -> None:
    catalogue = Catalogue(settings_with(), environ=ENV.get)
    assert "openai/gpt-4o" in catalogue.upstreams()
    assert catalogue.upstreams() == sorted(set(catalogue.upstreams()))


@pytest.mark.parametrize(("deployment", "where", "reason"), [
    ("{provider: p, model: x, tiers: [flex], native_tiers: {priority: p}}", "$.models.m.deployments[0]",
     "native_tiers names tier 'priority', which is not in tiers ['flex']"),
    ("{provider: p, model: x, tier_prices: {flex: {input: 1, output: 1}}}", "$.models.m.deployments[0]",
     "tier_prices names tier 'flex'"),
    ("{provider: p, model: x, tiers: [default, default]}", "$.models.m.deployments[0]", "each served tier once"),
    ("{provider: p, model: x, tiers: [turbo]}", "$.models.m.deployments[0].tiers[0]", "Invalid enum value 'turbo'"),
    ("{provider: p, model: x, weight: 0}", "$.models.m.deployments[0].weight", "Expected `float` > 0.0"),
    ("{provider: p, model: x, price: {input: -1, output: 1}}", "$.models.m.deployments[0].price.input",
     "Expected `float` >= 0.0"),
    ("{provider: p, model: x, price: {input: 1}}", "$.models.m.deployments[0].price", "missing required field"),
    ("{provider: p, model: x, capabilities: [telepathy]}", "$.models.m.deployments[0].capabilities[0]",
     "Invalid enum value"),
    ("{provider: p, model: x, context_window: 0}", "$.models.m.deployments[0].context_window", ">= 1"),
    ("{provider: p, model: x, region: eu-west}", "$.models.m.deployments[0].region",
     "'eu-west' conflicts with provider region 'us-east'"),
])
def test_invalid_catalogue_names_file_path_and_reason(tmp_path: Path, deployment: str, where: str,
                                                      reason: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("providers: {p: {dialect: openai_chat, base_url: x, region: us-east}}\n"
                    f"models: {{m: {{deployments: [{deployment}]}}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}:{where}: ")
    assert reason in str(caught.value)
