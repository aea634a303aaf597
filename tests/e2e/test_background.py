"""Background responses as jobs: polled, resumed and cancelled on both stores in one process, and
across real replicas sharing Redis, one of them killed or stopped mid-job."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from proxy.settings import Settings
from tests.conftest import Api
from tests.e2e.test_tool_loop import LINGER, _lingering, _text, _wait_for
from tests.gateway_process import GatewayProcess, spawn_gateway, unique_redis_prefix, write_gateway_config
from tests.gateway_server import TEAM_A_KEY, RunningGateway, delete_redis_prefix, gateway_settings, serve, serve_backend
from tests.spec_validation import parse_sse, validate_error_body, validate_event, validate_resource, validate_stream

SLOW = {"dialect": "openai_responses", "base_url": "embedded", "headers": {"x-sim-token-delay-ms": "100"}}
SLOWER = {**SLOW, "headers": {"x-sim-token-delay-ms": "300"}}
PROVIDERS = {"sim": {"dialect": "openai_responses", "base_url": "embedded"}, "slow": SLOW, "slower": SLOWER}
MODELS = {name: {"deployments": [{"provider": name, "model": "sim-1"}]} for name in PROVIDERS}
WORDS = " ".join(f"w{n}" for n in range(40))
"""An input the slow model echoes whole in about four seconds, one piece every 100 ms."""
ENDED = ("completed", "failed", "incomplete", "cancelled")


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway per store, with one job worker (so a second job waits in the queue)."""
    def build(url: str, prefix: str) -> Settings:
        settings = gateway_settings(url, store_prefix=prefix, providers=PROVIDERS, models=MODELS, tools=[LINGER],
                                    jobs={"workers": 1, "lease_s": 2})
        settings.teams["team-a"].tools = ["linger"]
        return settings

    with serve_backend(request.param, tmp_path_factory.mktemp("store"), build) as gateway:
        yield gateway


def events_of(api: Api, response_id: str, **params: str) -> list[dict[str, Any]]:
    """``GET /v1/responses/{id}?stream=true`` to its end, each event checked against the spec."""
    reply = api.http.get(f"/v1/responses/{response_id}", params={"stream": "true", **params})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    events, saw_done = parse_sse(reply.text)
    assert saw_done
    for event in events:
        validate_event(event)
    return events


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [event["sequence_number"] for event in events]


def cancel(api: Api, response_id: str, *, expect: int = 200) -> dict[str, Any]:
    reply = api.http.post(f"/v1/responses/{response_id}/cancel")
    assert reply.status_code == expect, reply.text
    body = reply.json()
    if expect == 200:
        validate_resource(body)
    else:
        validate_error_body(body)
    return body


def settle(api: Api, response_id: str, *, timeout: float = 30) -> dict[str, Any]:
    """Poll until the response has ended; the last poll."""
    deadline = time.monotonic() + timeout
    while (polled := api.get(f"/v1/responses/{response_id}"))["status"] not in ENDED:
        assert time.monotonic() < deadline, f"still {polled['status']}"
        time.sleep(0.1)
    validate_resource(polled)
    return polled


def wait_status(api: Api, response_id: str, status: str, *, timeout: float = 15) -> None:
    assert _wait_for(lambda: api.get(f"/v1/responses/{response_id}")["status"] == status, timeout), status


class Follower:
    """A client that stays connected to a response's event stream, read in a thread."""

    def __init__(self, base_url: str, response_id: str, **params: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.saw_done = False
        self._thread = threading.Thread(target=self._read, args=(base_url, response_id, params), daemon=True)
        self._thread.start()

    def _read(self, base_url: str, response_id: str, params: dict[str, str]) -> None:
        headers = {"Authorization": f"Bearer {TEAM_A_KEY}"}
        with httpx.stream("GET", f"{base_url}/v1/responses/{response_id}", params={"stream": "true", **params},
                          headers=headers, timeout=60) as reply:
            assert reply.status_code == 200
            pending = ""
            for text in reply.iter_text():
                pending += text
                blocks, _, pending = pending.rpartition("\n\n")
                events, saw_done = parse_sse(blocks + "\n\n")
                self.events += events
                self.saw_done = self.saw_done or saw_done

    def wait_for(self, kind: str, timeout: float = 15) -> None:
        assert _wait_for(lambda: any(event["type"] == kind for event in self.events), timeout), kind

    def result(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Every event once the stream ended, each checked against the spec."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        assert self.saw_done
        for event in self.events:
            validate_event(event)
        return self.events


# -- one gateway, both stores --------------------------------------------------------------------


def test_background_stream_is_replayed_whole_with_the_same_numbers(api: Api) -> None:
    events = api.stream({"model": "slow", "input": "stream me in the background", "background": True})

    assert events[0]["response"]["status"] == "queued" and events[0]["response"]["background"] is True
    assert events[-1]["type"] == "response.completed"
    assert _text(events[-1]["response"]) == "Echo: stream me in the background"
    assert events[-1]["response"]["created_at"] == events[0]["response"]["created_at"]
    assert events_of(api, events[0]["response"]["id"]) == events


def test_resume_returns_exactly_the_events_after_n(api: Api) -> None:
    queued = api.create({"model": "slow", "input": "one two three four five six seven eight", "background": True})

    live = events_of(api, queued["id"], starting_after="3")  # asked at once: replays, then follows the run
    full = events_of(api, queued["id"])

    validate_stream(full)
    assert numbers(live) == list(range(4, len(full)))
    assert live == full[4:]
    for after in (0, 7, len(full) - 1, len(full) + 5):
        assert events_of(api, queued["id"], starting_after=str(after)) == full[after + 1:]
    assert settle(api, queued["id"]) == full[-1]["response"]


def test_cancel_stops_a_running_response(api: Api, api_b: Api, running: RunningGateway) -> None:
    queued = api.create({"model": "slow", "input": WORDS, "background": True})
    follower = Follower(running.base_url, queued["id"])
    follower.wait_for("response.output_text.delta")
    cancel(api_b, queued["id"], expect=404)  # another team's
    refused = api.delete(f"/v1/responses/{queued['id']}", expect=400)  # its job would store it again
    assert refused["error"]["code"] == "response_in_progress"

    asked = time.monotonic()
    cancelled = cancel(api, queued["id"])
    events = follower.result()
    stopped_after = time.monotonic() - asked

    assert cancelled["status"] == "cancelled" and cancelled["output"] == []
    assert stopped_after < 3, "the run stops within about a second"
    assert numbers(events) == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.failed"  # OpenAI's terminal event for a cancel, without an error
    assert events[-1]["response"]["status"] == "cancelled" and events[-1]["response"]["output"] == []
    assert "error" not in [event["type"] for event in events]
    assert api.get(f"/v1/responses/{queued['id']}")["status"] == "cancelled"
    assert cancel(api, queued["id"]) == api.get(f"/v1/responses/{queued['id']}")  # idempotent
    assert events_of(api, queued["id"]) == events
    api.delete(f"/v1/responses/{queued['id']}")


def test_cancel_while_queued_ends_it_at_once(api: Api) -> None:
    busy = api.create({"model": "slow", "input": WORDS, "background": True})
    wait_status(api, busy["id"], "in_progress")
    waiting = api.create({"model": "sim", "input": "wait your turn", "background": True})
    time.sleep(0.3)
    assert api.get(f"/v1/responses/{waiting['id']}")["status"] == "queued"  # the only worker is busy

    cancelled = cancel(api, waiting["id"])

    assert cancelled["status"] == "cancelled"
    assert api.get(f"/v1/responses/{waiting['id']}")["status"] == "cancelled"
    events = events_of(api, waiting["id"])
    assert [(event["type"], event["response"]["status"]) for event in events] == [
        ("response.created", "queued"), ("response.failed", "cancelled")]
    cancel(api, busy["id"])
    assert settle(api, busy["id"])["status"] == "cancelled"
    assert settle(api, waiting["id"])["status"] == "cancelled"  # the worker that took it later left it so


def test_cancel_kills_the_running_tool_sandbox(api: Api) -> None:
    queued = api.create({"model": "sim", "input": "go", "background": True,
                         "tools": [{"type": "function", "name": "linger"}]})
    assert _wait_for(lambda: _lingering() == 1, 10), "the tool runs"

    cancel(api, queued["id"])

    assert _wait_for(lambda: _lingering() == 0, 5), "the sandbox outlived the cancel"
    assert settle(api, queued["id"])["status"] == "cancelled"


def test_cancel_and_stream_refusals_answer_as_openai_does(api: Api) -> None:
    finished = api.create({"model": "sim", "input": "quick", "background": True})
    assert settle(api, finished["id"])["status"] == "completed"
    synchronous = api.create({"model": "sim", "input": "now"})

    assert cancel(api, finished["id"], expect=400)["error"]["message"] == "Cannot cancel a completed response."
    assert cancel(api, synchronous["id"], expect=400)["error"]["message"] == "Cannot cancel a synchronous response."
    assert cancel(api, "resp_absent", expect=404)["error"]["code"] == "response_not_found"
    refused = api.get(f"/v1/responses/{synchronous['id']}", params={"stream": "true"}, expect=400)
    assert refused["error"]["param"] == "stream"
    for bad in ("-1", "soon", str(2**64)):
        refused = api.get(f"/v1/responses/{finished['id']}", params={"stream": "true", "starting_after": bad},
                          expect=400)
        assert refused["error"]["param"] == "starting_after"
    assert api.get(f"/v1/responses/{finished['id']}", params={"starting_after": "2"})["status"] == "completed"


def test_an_embedded_gateway_stopping_fails_its_running_job(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'store.db'}", providers=PROVIDERS, models=MODELS,
                                jobs={"shutdown_grace_s": 0.2})
    with serve(settings) as gateway, closing(Api(gateway.base_url, TEAM_A_KEY)) as api:
        queued = api.create({"model": "slow", "input": WORDS, "background": True})
        wait_status(api, queued["id"], "in_progress")
    with serve(settings) as again, closing(Api(again.base_url, TEAM_A_KEY)) as api:
        failed = api.get(f"/v1/responses/{queued['id']}")
        events = events_of(api, queued["id"])

    validate_resource(failed)
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "The gateway shut down before the response finished."
    validate_stream(events)
    assert events[-1]["response"] == failed


# -- replicas sharing Redis ---------------------------------------------------------------------


def replica_config(path: Path, prefix: str, **jobs: Any) -> Path:
    return write_gateway_config(path, store_prefix=prefix, providers=PROVIDERS, models=MODELS,
                                jobs={"lease_s": 1.5, **jobs})


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    prefix = unique_redis_prefix()
    config = replica_config(tmp_path_factory.mktemp("replicas") / "gateway.yaml", prefix)
    try:
        with spawn_gateway(config) as first, spawn_gateway(config) as second:
            yield first, second
    finally:
        delete_redis_prefix(prefix)


def sdk(replica: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=replica.base_url + "/v1", api_key=TEAM_A_KEY, max_retries=0)


def test_a_job_created_on_one_replica_is_polled_resumed_and_cancelled_on_the_other(
        replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    with sdk(replicas[0]) as one, sdk(replicas[1]) as other:
        created = one.responses.create(model="slow", input="across the replicas we go", background=True)
        validate_resource(created.to_dict())
        assert created.status == "queued"

        resumed = [event.to_dict() for event in other.responses.retrieve(created.id, stream=True, starting_after=2)]
        polled = other.responses.retrieve(created.id)
        with one.responses.stream(response_id=created.id, starting_after=2) as stream:
            replayed = [(event.type, event.sequence_number) for event in stream]
            final = stream.get_final_response()

        for event in resumed:
            validate_event(event)
        assert numbers(resumed) == list(range(3, 3 + len(resumed)))
        assert resumed[-1]["type"] == "response.completed"
        # The SDK asks for the whole stream and drops the first three itself.
        assert replayed == [(event["type"], event["sequence_number"]) for event in resumed]
        assert polled.status == "completed"
        assert polled.output_text == final.output_text == "Echo: across the replicas we go"
        assert polled.created_at == created.created_at

        running = one.responses.create(model="slow", input=WORDS, background=True)
        assert _wait_for(lambda: one.responses.retrieve(running.id).status == "in_progress", 15)
        cancelled = other.responses.cancel(running.id)
        validate_resource(cancelled.to_dict())
        assert cancelled.status == "cancelled" and cancelled.output == []
        assert one.responses.retrieve(running.id).status == "cancelled"
        assert one.responses.cancel(running.id).status == "cancelled"
        with pytest.raises(openai.BadRequestError, match="Cannot cancel a completed response"):
            one.responses.cancel(created.id)

        streamed = [event.to_dict() for event in other.responses.create(
            model="sim", input="a background stream", background=True, stream=True)]
        validate_stream(streamed)
        assert _text(streamed[-1]["response"]) == "Echo: a background stream"


@pytest.mark.parametrize("max_attempts", [2, 1], ids=["retried", "failed"])
def test_a_killed_replica_loses_its_job_to_another(tmp_path: Path, max_attempts: int) -> None:
    prefix = unique_redis_prefix()
    config = replica_config(tmp_path / "gateway.yaml", prefix, max_attempts=max_attempts)
    try:
        with spawn_gateway(config) as victim, closing(Api(victim.base_url, TEAM_A_KEY)) as api:
            queued = api.create({"model": "slow", "input": WORDS, "background": True})
            # Started once the victim holds the job (the only replica then).
            with spawn_gateway(config) as survivor, closing(Api(survivor.base_url, TEAM_A_KEY)) as api:
                follower = Follower(survivor.base_url, queued["id"])
                follower.wait_for("response.output_text.delta")
                victim.kill()
                final = settle(api, queued["id"])
                followed = follower.result()
                replay = events_of(api, queued["id"])
    finally:
        delete_redis_prefix(prefix)

    validate_stream(replay)
    assert replay[-1]["response"] == final
    assert final["created_at"] == queued["created_at"]
    if max_attempts == 2:  # run again from the start on the survivor
        assert final["status"] == "completed" and _text(final) == f"Echo: {WORDS}"
        assert followed[-1]["type"] == "error" and followed[-1]["error"]["code"] == "response_restarted"
        assert numbers(followed) == list(range(len(followed)))
    else:
        assert final["status"] == "failed"
        assert final["error"]["message"] == ("The gateway replica running this response stopped before it finished; "
                                             "after 1 run it is not run again.")
        validate_stream(followed)
        assert followed[-1]["response"] == final


@pytest.mark.parametrize("grace_s", [0.5, 30], ids=["handed-over", "finished"])
def test_a_replica_stopped_with_sigterm_finishes_or_hands_over_its_job(tmp_path: Path, grace_s: float) -> None:
    prefix = unique_redis_prefix()
    # A lease far longer than the test: the job cannot move to the other replica by lapsing.
    config = replica_config(tmp_path / "gateway.yaml", prefix, shutdown_grace_s=grace_s, lease_s=120)
    # The job must still run once the second replica has started (to be handed over, for the
    # grace as well), and a busy machine takes seconds to start a replica: it runs about twelve.
    model = "slower"
    try:
        with spawn_gateway(config) as leaving, closing(Api(leaving.base_url, TEAM_A_KEY)) as api:
            queued = api.create({"model": model, "input": WORDS, "background": True})
            with spawn_gateway(config) as staying, closing(Api(staying.base_url, TEAM_A_KEY)) as api:
                wait_status(api, queued["id"], "in_progress")
                asked = time.monotonic()
                # A clean exit (uvicorn raises the SIGTERM again once it has shut down).
                assert leaving.terminate() in (0, -signal.SIGTERM)
                stop_took = time.monotonic() - asked
                at_exit = api.get(f"/v1/responses/{queued['id']}")["status"]
                final = settle(api, queued["id"], timeout=30)
                replay = events_of(api, queued["id"])
    finally:
        delete_redis_prefix(prefix)

    if grace_s < 1:  # stopped at once; the other replica ran the job again
        assert stop_took < 5 and at_exit in ("queued", "in_progress")
    else:  # the replica finished the job before it exited
        assert at_exit == "completed"
    assert final["status"] == "completed" and _text(final) == f"Echo: {WORDS}"
    validate_stream(replay)
