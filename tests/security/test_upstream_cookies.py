"""One upstream session carries every team's calls, so a cookie an upstream sets (OpenAI's API
sets Cloudflare's) must never go back with a later call. The simulator sets one under a host
name, ``localhost``: aiohttp's default cookie jar ignores cookies of bare IP addresses, so with
``127.0.0.1`` the control below would have nothing to show."""

from __future__ import annotations

import aiohttp

from providers.http import new_session
from providers.simulator import start_simulator

COOKIE = "__cf_bm=set-for-team-a; Path=/; HttpOnly"


async def _cookies_sent(session: aiohttp.ClientSession) -> list[str | None]:
    """The ``Cookie`` header of each of two calls through ``session`` to an upstream that sets one."""
    simulator = await start_simulator()
    try:
        url = simulator.url.replace("127.0.0.1", "localhost") + "/v1/responses"
        for _ in range(2):
            async with session.post(url, json={"model": "m", "input": "hi"},
                                    headers={"x-sim-set-cookie": COOKIE}) as reply:
                assert reply.status == 200
                assert reply.headers.getall("Set-Cookie") == [COOKIE]
        async with aiohttp.ClientSession() as reader, reader.get(simulator.url + "/_sim/requests") as listed:
            records = await listed.json()
        return [record["headers"].get("cookie") for record in records]
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
