"""The fetch guard (tools/netguard.py): which addresses are refused, where the refusal happens
(classifier, resolver, socket factory), redirects and DNS rebinding against loopback services
the policy treats as forbidden, and http tools behind it. Only loopback is ever connected to."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
from collections.abc import AsyncIterator
from contextlib import closing
from ipaddress import ip_address
from pathlib import Path

import aiohttp
import pytest
import yaml

from proxy.settings import ConfigError, load_settings
from tests.conftest import Api
from tests.gateway_server import TEAM_A_KEY, gateway_settings, serve
from tests.security.loopback import (
    ALLOW_ORIGIN,
    INSIDE,
    ORIGIN,
    ScriptedResolver,
    Services,
    loopback_services,
)
from tools import ToolSpec, run_tool
from tools.netguard import AddressScreen, FetchPolicy, ForbiddenAddress, GuardedResolver, guarded_session, refusal

# -- the classifier --------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("169.254.10.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("100.64.0.1", "shared (CGNAT)"), ("100.127.255.254", "shared (CGNAT)"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"), ("2001:db8::1", "reserved"),
    # IPv4 inside IPv6: judged by the IPv4 address it reaches
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe", "cloud metadata"), ("2002:7f00:1::", "loopback"),
    # public
    ("8.8.8.8", None), ("1.1.1.1", None), ("172.32.0.1", None), ("100.128.0.1", None),
    ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None), ("64:ff9b::808:808", None),
])
def test_refusal_names_each_kind_of_non_public_address(address: str, reason: str | None) -> None:
    assert refusal(ip_address(address)) == reason


def test_the_allowlist_lets_through_its_networks_only() -> None:
    screen = AddressScreen(["10.20.0.0/16", "127.0.0.2", "fd00:1::/32"])
    for allowed in ("10.20.7.1", "127.0.0.2", "::ffff:127.0.0.2", "fd00:1::5", "8.8.8.8"):
        screen.check("service.test", allowed)
    for forbidden in ("10.21.0.1", "127.0.0.1", "169.254.169.254", "fd00:2::5"):
        with pytest.raises(ForbiddenAddress) as refused:
            screen.check("service.test", forbidden)
        assert refused.value.errno == errno.EACCES
        assert refused.value.strerror is not None and f"service.test ({forbidden}) is a" in refused.value.strerror


def test_a_bad_allowlist_entry_fails_start_up_with_its_path(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"fetch_policy": {"allow": ["10.0.0.0/8", "intranet"]}}))
    with pytest.raises(ConfigError, match=r"\$\.fetch_policy.*'intranet' is not an IP address or network"):
        load_settings(config)
    config.write_text(yaml.safe_dump({"fetch_policy": {"allow": ["10.0.0.0/8"]}}))
    assert load_settings(config).fetch_policy.allow == ["10.0.0.0/8"]


# -- where the address is decided: resolver and socket factory, no socket to a forbidden one ----


@pytest.mark.parametrize("answer", [["169.254.169.254"], ["10.0.0.5"], ["fd00:ec2::254"], ["8.8.8.8", "192.168.0.9"]])
async def test_the_resolver_refuses_a_name_with_any_forbidden_address(answer: list[str]) -> None:
    inner = ScriptedResolver({"metadata.test": [answer]})
    with pytest.raises(ForbiddenAddress, match=r"metadata\.test \("):
        await GuardedResolver(AddressScreen([]), inner).resolve("metadata.test", 80)
    assert inner.lookups == ["metadata.test"]


async def test_the_resolver_passes_public_and_allowed_answers_on() -> None:
    inner = ScriptedResolver({"public.test": [["8.8.8.8", "2606:4700:4700::1111"]], "partner.test": [["10.9.0.1"]]})
    resolver = GuardedResolver(AddressScreen(["10.9.0.0/24"]), inner)
    assert [r["host"] for r in await resolver.resolve("public.test", 443)] == ["8.8.8.8", "2606:4700:4700::1111"]
    assert [r["host"] for r in await resolver.resolve("partner.test", 443)] == ["10.9.0.1"]


def test_the_socket_factory_refuses_before_making_a_socket() -> None:
    screen = AddressScreen([])
    for sockaddr, family in ((("169.254.169.254", 80), socket.AF_INET), (("::1", 80, 0, 0), socket.AF_INET6)):
        with pytest.raises(ForbiddenAddress, match=r"is a (cloud metadata|loopback) address"):
            screen.open_socket((family, socket.SOCK_STREAM, 6, "", sockaddr))
    with screen.open_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80))) as made:
        assert made.family == socket.AF_INET  # made, never connected


# -- through aiohttp, against loopback services the policy forbids -----------------------------


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    async with loopback_services() as running:
        yield running


def _names() -> ScriptedResolver:
    """The test's DNS: ``rebind.test`` answers the allowed origin first, the forbidden service next."""
    return ScriptedResolver({"origin.test": [[ORIGIN]], "inside.test": [[INSIDE]],
                             "rebind.test": [[ORIGIN], [INSIDE]]})


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as reply:
        assert reply.status == 200
        return await reply.text()


def _refusal(failure: pytest.ExceptionInfo[aiohttp.ClientConnectorError]) -> str:
    assert isinstance(failure.value.os_error, ForbiddenAddress)
    return str(failure.value.os_error)


async def test_the_inside_service_answers_when_the_policy_allows_it(services: Services) -> None:
    """The control: the refusals below are the policy's doing, not an unreachable service."""
    async with guarded_session(FetchPolicy(allow=["127.0.0.0/8"]), resolver=_names()) as session:
        assert await _get(session, services.url("inside.test", "/secret")) == "inside secret"
        assert await _get(session, services.url(INSIDE, "/secret")) == "inside secret"
    assert services.inside_saw == ["/secret", "/secret"]


async def test_forbidden_names_and_literals_are_refused(services: Services) -> None:
    async with guarded_session(FetchPolicy(allow=ALLOW_ORIGIN), resolver=_names()) as session:
        assert await _get(session, services.url("origin.test", "/hello")) == "origin GET "
        with pytest.raises(aiohttp.ClientConnectorError) as by_name:
            await _get(session, services.url("inside.test", "/secret"))
        assert "inside.test (127.0.0.1) is a loopback address" in _refusal(by_name)
        with pytest.raises(aiohttp.ClientConnectorError) as by_literal:
            await _get(session, services.url(INSIDE, "/secret"))
        assert "127.0.0.1 is a loopback address" in _refusal(by_literal)
    assert services.inside_saw == []


@pytest.mark.parametrize("hop", ["literal", "name"])
async def test_no_redirect_is_followed_into_a_forbidden_address(services: Services, hop: str) -> None:
    inside = services.url(INSIDE if hop == "literal" else "inside.test", "/secret")
    async with guarded_session(FetchPolicy(allow=ALLOW_ORIGIN), resolver=_names()) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await _get(session, services.url("origin.test", "/moved?to=" + inside))
        assert "is a loopback address" in _refusal(refused)
        # A redirect that stays on allowed addresses is followed: each hop is checked, not refused.
        assert await _get(session, services.url("origin.test", "/moved?to=" + services.url(ORIGIN, "/there"))) \
            == "origin GET "
    assert services.inside_saw == []
    assert services.origin_saw == ["/moved", "/moved", "/there"]


async def test_a_name_rebound_to_a_forbidden_address_is_refused_on_the_next_connection(services: Services) -> None:
    resolver = _names()
    async with guarded_session(FetchPolicy(allow=ALLOW_ORIGIN), resolver=resolver) as session:
        assert await _get(session, services.url("rebind.test", "/first")) == "origin GET "
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await _get(session, services.url("rebind.test", "/second"))
        assert "rebind.test (127.0.0.1) is a loopback address" in _refusal(refused)
    assert resolver.lookups == ["rebind.test", "rebind.test"], "resolved again for the new connection"
    assert services.inside_saw == [] and services.origin_saw == ["/first"]


# -- http tools behind the guard ---------------------------------------------------------------


def _http_tool(url: str, max_output_bytes: int = 65536) -> ToolSpec:
    return ToolSpec(name="lookup", description="internal lookup", kind="http", target=url,
                    parameters={"type": "object"}, max_output_bytes=max_output_bytes)


async def test_http_tools_reach_allowed_services_only(services: Services) -> None:
    async with guarded_session(FetchPolicy(allow=ALLOW_ORIGIN), resolver=_names()) as session:
        served = await run_tool(_http_tool(services.url("origin.test", "/lookup")), '{"q": 1}', session=session)
        assert (served.output, served.error) == ('origin POST {"q": 1}', None)
        for target in (services.url(INSIDE, "/secret"), services.url("inside.test", "/secret")):
            refused = await run_tool(_http_tool(target), "{}", session=session)
            assert refused.error == "The tool's service is at an address the gateway's fetch policy does not allow."
        moved = await run_tool(_http_tool(services.url("origin.test", "/moved?to=" + services.url(INSIDE, "/x"))),
                               "{}", session=session)
        assert moved.exit_code == 302 and moved.error is not None  # not followed at all
        capped = await run_tool(_http_tool(services.url("origin.test", "/big"), max_output_bytes=5), "{}",
                                session=session)
        assert capped.error == "The tool's reply passed the limit of 5 bytes and was discarded."
    assert services.inside_saw == []


def _tool_output(api: Api, tool: str) -> str:
    resource = api.create({"model": "sim", "input": "look it up", "tools": [{"type": "function", "name": tool}]})
    return next(item["output"] for item in resource["output"] if item["type"] == "function_call_output")


async def test_the_gateway_runs_http_tools_behind_its_fetch_policy(services: Services, tmp_path: Path) -> None:
    """``fetch_policy`` in the gateway file reaches the tool loop: the allowed service answers the
    model, the forbidden one is never contacted and the model is told why."""
    tools = [{"name": name, "description": f"{name} lookup", "kind": "http", "target": services.url(host, "/t"),
              "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
             for name, host in (("partner", ORIGIN), ("intranet", INSIDE))]
    settings = gateway_settings(f"sqlite:///{tmp_path / 'store.db'}", tools=tools, fetch_policy={"allow": ALLOW_ORIGIN})
    settings.teams["team-a"].tools = ["partner", "intranet"]
    with serve(settings) as gateway, closing(Api(gateway.base_url, TEAM_A_KEY)) as api:
        # The gateway's client calls block: they run in a thread while this loop serves the services.
        partner = await asyncio.to_thread(_tool_output, api, "partner")
        intranet = await asyncio.to_thread(_tool_output, api, "intranet")
    assert partner.startswith("origin POST ") and "q" in json.loads(partner.removeprefix("origin POST "))
    assert intranet == "Error: The tool's service is at an address the gateway's fetch policy does not allow."
    assert services.inside_saw == [] and services.origin_saw == ["/t"]
