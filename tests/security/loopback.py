"""Two HTTP services on loopback addresses, and a resolver the test scripts, for the fetch guard.

``inside`` listens on 127.0.0.1, which the tests' policy forbids: it stands for the metadata
service or an internal database a fetch must never reach. ``origin`` listens on 127.0.0.2, which
the policy allows: it stands for a public site, and redirects wherever a test asks. Both use one
port, so that a name resolving to either one reaches the same URL (DNS rebinding). No address
other than loopback is ever connected to: the forbidden ones outside 127/8 are only ever
resolved by ``ScriptedResolver``, and refused before a socket exists.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

INSIDE = "127.0.0.1"
ORIGIN = "127.0.0.2"
ALLOW_ORIGIN = [f"{ORIGIN}/32"]
"""The tests' fetch policy: loopback is forbidden except the origin's address."""


@dataclass
class Services:
    port: int
    inside_saw: list[str] = field(default_factory=list)
    """Paths requested from ``inside``: must stay empty wherever the policy is in force."""
    origin_saw: list[str] = field(default_factory=list)

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"


def _origin_app(services: Services) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        services.origin_saw.append(request.path)
        target = request.query.get("to")
        if target:
            raise web.HTTPFound(target)
        response = web.Response(text=f"origin {request.method} {await request.text()}")
        response.force_close()  # the next request opens a new connection, and resolves again
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _inside_app(services: Services) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        services.inside_saw.append(request.path)
        return web.Response(text="inside secret")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@asynccontextmanager
async def loopback_services() -> AsyncIterator[Services]:
    runners: list[web.AppRunner] = []
    try:
        for _ in range(20):  # the origin needs inside's port on its own address; rarely taken
            with socket.socket() as probe:
                probe.bind((INSIDE, 0))
                port = int(probe.getsockname()[1])
            services = Services(port=port)
            try:
                for app, host in ((_inside_app(services), INSIDE), (_origin_app(services), ORIGIN)):
                    runner = web.AppRunner(app)
                    await runner.setup()
                    runners.append(runner)
                    await web.TCPSite(runner, host, port).start()
            except OSError:
                for runner in runners:
                    await runner.cleanup()
                runners.clear()
                continue
            yield services
            return
        raise RuntimeError("no port free on both loopback addresses")
    finally:
        for runner in runners:
            await runner.cleanup()


class ScriptedResolver(AbstractResolver):
    """Answers each name from a script: the n-th lookup of a name gets its n-th list of
    addresses (the last list again after that). ``lookups`` lists the names asked, in order."""

    def __init__(self, script: dict[str, list[list[str]]]) -> None:
        self._script = script
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = self._script.get(host)
        if not answers:
            raise OSError(f"{host}: no such name in the test's script")
        addresses = answers[min(self.lookups.count(host), len(answers) - 1)]
        self.lookups.append(host)
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST) for address in addresses]

    async def close(self) -> None:
        pass
