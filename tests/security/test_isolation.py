"""Teams are isolated: a randomised run with many teams and keys (from the gateway file and from
team policy files, team names that are prefixes of each other) in which every way of naming
another team's response or item — read, stream, input items, continuation, item reference,
compaction, token count, cancel, delete — answers 404 and changes nothing; usage shows each team
only its own; admin endpoints refuse team keys and admin keys reach no response. Both stores.

The seed is printed with every failure; ``INTERLOCK_ISOLATION_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.auth import hash_key
from tests.conftest import Api
from tests.gateway_server import delete_redis_prefix, gateway_settings, serve, store_urls
from tests.spec_validation import validate_error_body, validate_resource

SEED = int(os.environ.get("INTERLOCK_ISOLATION_SEED") or random.SystemRandom().randrange(2**32))
ADMIN_KEY = "sk-isolation-admin-6f0d2a"
TEAM_NAMES = ["alpha", "alpha-beta", "alpha.beta", "beta", "gamma", "g", "delta-7"]
"""Some are prefixes of others: a store key built carelessly from the name would collide."""
SLOW_WORDS = " ".join(f"w{n}" for n in range(400))
"""Echoed by the slow model in about 40 seconds: its background responses stay in progress until
their team cancels them."""
PROVIDERS = {"sim": {"dialect": "openai_responses", "base_url": "embedded"},
             "slow": {"dialect": "openai_responses", "base_url": "embedded",
                      "headers": {"x-sim-token-delay-ms": "100"}}}
MODELS = {name: {"deployments": [{"provider": name, "model": "sim-1"}]} for name in PROVIDERS}


@dataclass
class Key:
    team: str
    name: str
    secret: str


@dataclass
class Owned:
    """A response and what its team can name of it."""

    team: str
    id: str
    item_id: str
    background: bool = False


@dataclass
class World:
    rng: random.Random
    base_url: str
    keys: list[Key]
    clients: dict[str, Api] = field(default_factory=dict)
    responses: list[Owned] = field(default_factory=list)

    def client(self, key: Key) -> Api:
        if key.secret not in self.clients:
            self.clients[key.secret] = Api(self.base_url, key.secret)
        return self.clients[key.secret]

    def keys_of(self, team: str) -> list[Key]:
        return [key for key in self.keys if key.team == team]


def _draw_keys(rng: random.Random) -> list[Key]:
    return [Key(team, f"{team[:1]}{n}", f"sk-iso-{team}-{n}-{rng.getrandbits(48):012x}")
            for team in TEAM_NAMES for n in range(rng.randint(1, 3))]


def _configure(keys: list[Key], rng: random.Random, policies: Path) -> dict[str, Any]:
    """Each key is written, at random, in the gateway file's ``teams`` or in its team's file."""
    teams: dict[str, Any] = {}
    files: dict[str, list[dict[str, str]]] = {}
    for key in keys:
        entry = {"sha256": hash_key(key.secret), "name": key.name}
        if rng.random() < 0.5:
            teams.setdefault(key.team, {"keys": []})["keys"].append(entry)
        else:
            files.setdefault(key.team, []).append(entry)
    for team, entries in files.items():
        (policies / f"{team}.yaml").write_text(yaml.safe_dump({"keys": entries}))
    return teams


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    rng = random.Random(SEED)
    keys = _draw_keys(rng)
    url, prefix = store_urls(tmp_path_factory.mktemp("store"))[request.param]
    policies = tmp_path_factory.mktemp("policies")
    settings = gateway_settings(url, store_prefix=prefix, providers=PROVIDERS, models=MODELS,
                                teams=_configure(keys, rng, policies), policies_dir=str(policies),
                                admin_keys=[{"sha256": hash_key(ADMIN_KEY), "name": "ops"}],
                                jobs={"shutdown_grace_s": 0.5})
    try:
        with serve(settings) as gateway:
            world = World(rng=rng, base_url=gateway.base_url, keys=keys)
            _populate(world)
            yield world
            for client in world.clients.values():
                client.close()
    finally:
        if request.param == "redis":
            delete_redis_prefix(prefix)


def _populate(world: World) -> None:
    """Every key stores a response or two (some streamed); every team starts a slow background one."""
    for key in world.keys:
        api = world.client(key)
        for n in range(world.rng.randint(1, 2)):
            body = {"model": "sim", "input": f"{key.team} {key.name} {n}"}
            created = api.stream(body)[-1]["response"] if world.rng.random() < 0.3 else api.create(body)
            world.responses.append(Owned(key.team, created["id"], created["output"][0]["id"]))
    for team in TEAM_NAMES:
        queued = world.client(world.keys_of(team)[0]).create(
            {"model": "slow", "input": SLOW_WORDS, "background": True})
        world.responses.append(Owned(team, queued["id"], "", background=True))


def _refused(reply: httpx.Response, code: str, why: str) -> None:
    assert reply.status_code == 404, f"{why}: {reply.status_code} {reply.text[:300]}"
    body = reply.json()
    validate_error_body(body)
    assert body["error"]["code"] == code, f"{why}: {body}"


Probe = Callable[[Api, Owned, str], None]


def _read(api: Api, target: Owned, why: str) -> None:
    _refused(api.http.get(f"/v1/responses/{target.id}"), "response_not_found", why)


def _stream(api: Api, target: Owned, why: str) -> None:
    _refused(api.http.get(f"/v1/responses/{target.id}", params={"stream": "true"}), "response_not_found", why)


def _input_items(api: Api, target: Owned, why: str) -> None:
    _refused(api.http.get(f"/v1/responses/{target.id}/input_items"), "response_not_found", why)


def _continue(api: Api, target: Owned, why: str) -> None:
    reply = api.http.post("/v1/responses", json={"model": "sim", "input": "go on", "previous_response_id": target.id})
    _refused(reply, "previous_response_not_found", why)


def _reference(api: Api, target: Owned, why: str) -> None:
    item = target.item_id or target.id
    reply = api.http.post("/v1/responses", json={"model": "sim", "input": [{"type": "item_reference", "id": item}]})
    _refused(reply, "item_not_found", why)


def _compact(api: Api, target: Owned, why: str) -> None:
    reply = api.http.post("/v1/responses/compact", json={"model": "sim", "previous_response_id": target.id})
    _refused(reply, "previous_response_not_found", why)


def _count(api: Api, target: Owned, why: str) -> None:
    reply = api.http.post("/v1/responses/input_tokens", json={"model": "sim", "previous_response_id": target.id})
    _refused(reply, "previous_response_not_found", why)


def _cancel(api: Api, target: Owned, why: str) -> None:
    _refused(api.http.post(f"/v1/responses/{target.id}/cancel"), "response_not_found", why)


def _delete(api: Api, target: Owned, why: str) -> None:
    _refused(api.http.delete(f"/v1/responses/{target.id}"), "response_not_found", why)


PROBES: list[Probe] = [_read, _stream, _input_items, _continue, _reference, _compact, _count, _cancel, _delete]


def test_no_operation_reaches_another_teams_response(world: World) -> None:
    rounds = 150
    for n in range(rounds):
        actor = world.rng.choice(world.keys)
        target = world.rng.choice([owned for owned in world.responses if owned.team != actor.team])
        probe = world.rng.choice(PROBES)
        probe(world.client(actor), target, f"seed {SEED}, round {n}: {probe.__name__} by {actor.team}/{actor.name} "
                                           f"on {target.team}'s {target.id}")
    # Nothing was read, continued, cancelled or deleted: every response is still its team's,
    # through any of its keys, and the background ones are still running.
    for owned in world.responses:
        key = world.rng.choice(world.keys_of(owned.team))
        resource = world.client(key).get(f"/v1/responses/{owned.id}")
        validate_resource(resource)
        assert resource["id"] == owned.id, f"seed {SEED}"
        if owned.background:
            assert resource["status"] in ("queued", "in_progress"), f"seed {SEED}: {resource['status']}"


def test_a_team_continues_cancels_and_deletes_its_own_through_any_key(world: World) -> None:
    """The control: what was refused across teams works within one, key to key."""
    for team in TEAM_NAMES:
        keys = world.keys_of(team)
        mine = [owned for owned in world.responses if owned.team == team]
        stored = next(owned for owned in mine if not owned.background)
        api = world.client(world.rng.choice(keys))
        continued = api.create({"model": "sim", "input": [{"type": "item_reference", "id": stored.item_id}],
                                "previous_response_id": stored.id})
        assert continued["previous_response_id"] == stored.id
        background = next(owned for owned in mine if owned.background)
        assert world.client(world.rng.choice(keys)).http.post(f"/v1/responses/{background.id}/cancel").status_code \
            == 200
        assert world.client(world.rng.choice(keys)).delete(f"/v1/responses/{continued['id']}")["deleted"] is True


def test_usage_shows_each_team_only_its_own(world: World) -> None:
    owners = {owned.id: owned.team for owned in world.responses}
    for key in world.keys:
        api = world.client(key)
        page = api.get("/v1/usage")
        assert page["team"] == key.team
        assert {record["team"] for record in page["data"]} <= {key.team}, f"seed {SEED}"
        foreign = [r["response_id"] for r in page["data"] if owners.get(r["response_id"], key.team) != key.team]
        assert foreign == [], f"seed {SEED}: {key.team} sees {foreign}"
        other = world.rng.choice([team for team in TEAM_NAMES if team != key.team])
        _refused(api.http.get("/v1/usage", params={"team": other}), "unknown_team", f"seed {SEED}")
    admin = Api(world.base_url, ADMIN_KEY)
    try:
        for team in TEAM_NAMES:
            records = admin.get("/v1/usage", params={"team": team})["data"]
            assert records and {record["team"] for record in records} == {team}
    finally:
        admin.close()


def test_admin_endpoints_refuse_team_keys_and_admin_keys_reach_no_response(world: World) -> None:
    explain = {"team": TEAM_NAMES[0], "request": {"model": "sim", "input": "hi"}}
    for key in world.rng.sample(world.keys, 5):
        reply = world.client(key).http.post("/v1/policy/explain", json=explain)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "admin_key_required"
        validate_error_body(reply.json())
    anonymous = httpx.post(world.base_url + "/v1/policy/explain", json=explain)
    assert anonymous.status_code == 401
    validate_error_body(anonymous.json())
    admin = Api(world.base_url, ADMIN_KEY)
    try:
        assert admin.http.post("/v1/policy/explain", json=explain).status_code == 200
        target = world.rng.choice(world.responses)
        for reply in (admin.http.get(f"/v1/responses/{target.id}"), admin.http.delete(f"/v1/responses/{target.id}"),
                      admin.http.post("/v1/responses", json={"model": "sim", "input": "hi"})):
            assert reply.status_code == 401, reply.text
            validate_error_body(reply.json())
    finally:
        admin.close()
