"""Upstream calls take nothing of the gateway's elsewhere: one session carries every team's
calls, so a cookie an upstream sets (OpenAI's API sets Cloudflare's) never goes back with a later
call; and a redirect is refused, not followed, since following it would send the request and the
deployment's credential to wherever it points."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import httpx
import msgspec
import pytest

from providers.http import new_session
from providers.simulator import start_simulator
from proxy.settings import Settings
from tests.gateway_server import TEAM_A_KEY, gateway_settings, serve
from tests.spec_validation import validate_error_body

COOKIE = "__cf_bm=set-for-team-a; Path=/; HttpOnly"


async def _recorded(simulator_url: str) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as reader, reader.get(simulator_url + "/_sim/requests") as listed:
        return list(await listed.json())


async def _cookies_sent(session: aiohttp.ClientSession) -> list[str | None]:
    """The ``Cookie`` header of each of two calls through ``session`` to an upstream that sets one,
    under a host name (``localhost``): aiohttp's default cookie jar ignores cookies of bare IP
    addresses, so with ``127.0.0.1`` the control below would have nothing to show."""
    simulator = await start_simulator()
    try:
        url = simulator.url.replace("127.0.0.1", "localhost") + "/v1/responses"
        for _ in range(2):
            async with session.post(url, json={"model": "m", "input": "hi"},
                                    headers={"x-sim-set-cookie": COOKIE}) as reply:
                assert reply.status == 200
                assert reply.headers.getall("Set-Cookie") == [COOKIE]
        return [dict(record["headers"]).get("cookie") for record in await _recorded(simulator.url)]
    finally:
        await simulator.close()


async def test_the_upstream_session_sends_no_cookie_an_upstream_set() -> None:
    async with aiohttp.ClientSession() as plain:  # the control: aiohttp's default jar sends it back
        assert await _cookies_sent(plain) == [None, "__cf_bm=set-for-team-a"]
    session = new_session()
    try:
        assert await _cookies_sent(session) == [None, None]
    finally:
        await session.close()


async def test_a_redirect_is_refused_and_its_target_sees_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment's key goes in ``x-api-key``, which aiohttp would carry to another host."""
    secret = "sk-ant-upstream-3c0ffee"
    monkeypatch.setenv("INTERLOCK_TEST_MOVED_KEY", secret)
    target = await start_simulator()
    try:
        config = msgspec.to_builtins(gateway_settings(f"sqlite:///{tmp_path / 'store.db'}"))
        config["providers"]["moved"] = {"dialect": "anthropic", "base_url": "embedded", "auth": "x-api-key",
                                        "api_key_env": "INTERLOCK_TEST_MOVED_KEY",
                                        "headers": {"x-sim-fault": f"redirect:{target.url}/v1/messages"}}
        config["models"]["moved"] = {"deployments": [{"provider": "moved", "model": "sim-1"}]}
        with serve(msgspec.convert(config, Settings)) as running:
            async with httpx.AsyncClient(base_url=running.base_url, timeout=30,
                                         headers={"Authorization": f"Bearer {TEAM_A_KEY}"}) as client:
                reply = await client.post("/v1/responses", json={"model": "moved", "input": "hi"})
        assert reply.status_code == 502, reply.text
        validate_error_body(reply.json())
        assert reply.json()["error"]["code"] == "upstream_redirect" and secret not in reply.text
        assert await _recorded(target.url) == []
    finally:
        await target.close()
