"""One request of a run, as sent (``Shot``) and as it came back (``Reply``), and the client
that sends it the way a real one behind a load balancer would.

The client picks a replica in rotation round-robin, and sends the request again to the next one
only when the connection was refused: nothing reached the gateway, so the openai SDK and a load
balancer would both retry it. Every other failure is the request's outcome. A background request
is followed by polling ``GET /v1/responses/{id}`` on any live replica until it has ended.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import msgspec

from tests.chaos.cluster import Replica
from tests.chaos.scenarios import TEAMS

Kind = Literal["plain", "tools", "background"]
ENDED = frozenset({"completed", "failed", "incomplete", "cancelled"})
_REROUTES = 3
_NO_REPLICA_PAUSE_S = 0.2
_POLL_S = 0.25


@dataclass(frozen=True)
class Expectation:
    """What the documentation promises for a request: the HTTP error statuses it may end in,
    and whether a stream may end with ``error`` + ``response.failed``."""

    statuses: frozenset[int] = frozenset()
    fails_mid_stream: bool = False


@dataclass(frozen=True)
class Shot:
    index: int
    row: str
    """The report row the request counts in: its fault."""
    team: str
    model: str
    kind: Kind
    stream: bool
    expect: Expectation
    abort_after_events: int | None = None
    """The client leaves after this many events (client-abort fault)."""
    padding: int = 0
    """Words of filler in the input, echoed back: a longer stream."""

    @property
    def marker(self) -> str:
        """Unique to the request and echoed by the simulator: a reply to another request shows."""
        return f"r{self.index:06d}{self.team[-1]}"

    @property
    def number(self) -> int:
        """What the calculator is asked to evaluate, and so what the model's last turn quotes."""
        return 1000 + self.index

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": self._text()}
        if self.kind == "tools":
            body["input"] += f" compute {self.number}"
            body["tools"] = [{"type": "function", "name": "calculator"}]
        if self.kind == "background":
            body["background"] = True
        if self.stream:
            body["stream"] = True
        return body

    def _text(self) -> str:
        return f"chaos {self.marker}" + " steady" * self.padding

    def expected_text(self) -> str:
        return f"Tool said: {self.number}" if self.kind == "tools" else f"Echo: {self._text()}"


class Reply(msgspec.Struct, kw_only=True):
    """What the client saw; judged later (``tests.chaos.verdicts``), off the event loop."""

    shot: Shot
    replica: str = ""
    started: float = 0.0
    ended: float = 0.0
    status: int | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""
    final: bytes | None = None
    """A background response as last read, once it ended (or when polling gave up)."""
    error: str | None = None
    """A transport error or timeout: no complete reply."""
    cut_by_kill: bool = False
    """The error came while the replica serving the request was SIGKILLed."""
    aborted: bool = False
    rerouted: int = 0

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass
class Client:
    """Sends shots to the replicas of ``replicas()`` that are in rotation."""

    replicas: Callable[[], Sequence[Replica]]
    timeout_s: float = 30.0
    poll_limit_s: float = 60.0
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def _pick(self) -> Replica | None:
        ready = [replica for replica in self.replicas() if replica.in_rotation]
        return ready[next(self._turn) % len(ready)] if ready else None

    async def send(self, session: aiohttp.ClientSession, shot: Shot) -> Reply:
        reply = Reply(shot=shot, started=time.monotonic(), error="no replica in rotation")
        headers = {"Authorization": f"Bearer {TEAMS[shot.team]}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        for _ in range(_REROUTES):
            replica = self._pick()
            if replica is None:
                await asyncio.sleep(_NO_REPLICA_PAUSE_S)
                continue
            reply.replica = replica.name
            try:
                async with session.post(replica.url + "/v1/responses", json=shot.body(), headers=headers,
                                        timeout=timeout) as response:
                    reply.status = response.status
                    reply.headers = {name.lower(): value for name, value in response.headers.items()}
                    reply.body = await _read(response, shot.abort_after_events)
                    reply.aborted = shot.abort_after_events is not None and not response.content.at_eof()
                reply.error = None
                break
            except aiohttp.ClientConnectorError as exc:
                reply.rerouted += 1
                reply.error = f"{type(exc).__name__}: {exc}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reply.error = f"{type(exc).__name__}: {exc}"[:300]
                reply.cut_by_kill = replica.killed_during(reply.started, time.monotonic())
                break
        reply.ended = time.monotonic()
        if shot.kind == "background" and reply.status == 200 and reply.error is None:
            await self._follow(session, reply, headers)
        return reply

    async def _follow(self, session: aiohttp.ClientSession, reply: Reply, headers: dict[str, str]) -> None:
        """Poll the queued response until it ends; the reply's end is when the end was seen."""
        try:
            response_id = msgspec.json.decode(reply.body)["id"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return  # judged malformed from the body itself
        deadline = time.monotonic() + self.poll_limit_s
        while time.monotonic() < deadline:
            replica = self._pick()
            if replica is not None:
                try:
                    async with session.get(f"{replica.url}/v1/responses/{response_id}", headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=10)) as response:
                        if response.status == 200:
                            reply.final = await response.read()
                            if msgspec.json.decode(reply.final).get("status") in ENDED:
                                break
                except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
                    pass  # a replica or Redis is down for a moment: poll again
            await asyncio.sleep(_POLL_S)
        reply.ended = time.monotonic()


async def _read(response: aiohttp.ClientResponse, abort_after_events: int | None) -> bytes:
    if abort_after_events is None:
        return await response.read()
    seen = b""
    async for chunk in response.content.iter_any():
        seen += chunk
        if seen.count(b"\n\n") >= abort_after_events:
            break  # leaving the block closes the connection mid-stream
    return seen


def client_session(limit: int = 0) -> aiohttp.ClientSession:
    """No keep-alive: a replica being stopped cannot race a request on an idle connection, which
    would need a retry that the request's outcome would then hide."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=True))
