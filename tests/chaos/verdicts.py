"""The outcome of one request, judged from what the client saw, once the load is over: schema
validation costs milliseconds per stream, which the load loop must not wait on.

Outcomes:

``completed``  a schema-valid response (JSON, or a valid stream ending ``response.completed`` or
               ``.incomplete``) whose output answers this very request
``failed``     a well-formed error the documentation promises for the request's fault: a valid
               error envelope with a documented status, a valid stream ending ``error`` then
               ``response.failed``, or a background response that ended ``failed`` with an error
``aborted``    the client left mid-stream on purpose
``killed``     the connection died with the replica serving it, SIGKILLed meanwhile
``lost``       no outcome: a timeout, a connection cut while its replica lived, a stream without
               its terminal event, a background response that never ended
``malformed``  anything else: invalid JSON or schema, an error the fault does not explain (a 500
               included), or an answer to another request
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tests.chaos.traffic import ENDED, Reply
from tests.spec_validation import TERMINAL, parse_sse, validate_error_body, validate_resource, validate_stream

Outcome = Literal["completed", "failed", "aborted", "killed", "lost", "malformed"]
OUTCOMES: tuple[Outcome, ...] = ("completed", "failed", "aborted", "killed", "lost", "malformed")
RUNS_EXHAUSTED = "The gateway replica running this response stopped before it finished"
"""How a background response ends after ``jobs.max_attempts`` runs cut short (docs/background.md)."""
RETRY_HINTED = frozenset({"server_overloaded", "store_unavailable", "limits_unavailable"})
"""The gateway's own refusals: they always say when to retry (an upstream's error says so only
when the upstream did)."""


class Verdict(msgspec.Struct, kw_only=True):
    index: int
    row: str
    team: str
    outcome: Outcome
    reason: str = ""
    latency_ms: float = 0.0
    response_id: str | None = None
    """The response the client learned of (its usage record must exist, under its team)."""
    usage: tuple[int, int] | None = None
    """(input, output) tokens of an ended response."""
    stored: bool = False
    """The response says it was stored (one that ends while the store is unreachable says not)."""
    background: bool = False
    status: int | None = None


def judge(reply: Reply) -> Verdict:
    verdict = Verdict(index=reply.shot.index, row=reply.shot.row, team=reply.shot.team, outcome="lost",
                      latency_ms=reply.latency_ms, status=reply.status, background=reply.shot.kind == "background")
    try:
        _judge(reply, verdict)
    except (AssertionError, ValueError, KeyError, TypeError, IndexError) as exc:
        verdict.outcome, verdict.reason = "malformed", f"{type(exc).__name__}: {exc}"[:500]
    return verdict


def _judge(reply: Reply, verdict: Verdict) -> None:
    shot = reply.shot
    if reply.error is not None:
        verdict.outcome = "killed" if reply.cut_by_kill else "lost"
        verdict.reason = reply.error
        return
    assert reply.headers.get("x-request-id", "").startswith("req_"), "no x-request-id"
    if reply.status != 200:
        body = msgspec.json.decode(reply.body)
        validate_error_body(body)
        assert reply.status in shot.expect.statuses, (
            f"HTTP {reply.status} {body['error']['code']} is not documented for {shot.row}")
        if body["error"]["code"] in RETRY_HINTED:
            assert "retry-after" in reply.headers, f"HTTP {reply.status} {body['error']['code']} without retry-after"
        verdict.outcome, verdict.reason = "failed", f"HTTP {reply.status} {body['error']['code']}"
        return
    if shot.stream:
        _judge_stream(reply, verdict)
        return
    resource = msgspec.json.decode(reply.body)
    validate_resource(resource)
    verdict.response_id = resource["id"]
    if shot.kind == "background":
        _judge_background(reply, verdict)
        return
    _judge_resource(resource, reply, verdict)


def _judge_stream(reply: Reply, verdict: Verdict) -> None:
    text = reply.body.decode()
    if reply.aborted:
        events, _ = parse_sse(text[: text.rfind("\n\n") + 2])
        verdict.outcome, verdict.reason = "aborted", f"after {len(events)} events"
        if events and "response" in events[0]:
            verdict.response_id = events[0]["response"]["id"]
        return
    events, saw_done = parse_sse(text)
    if not events or events[-1]["type"] not in TERMINAL or not saw_done:
        last = events[-1]["type"] if events else "nothing"
        verdict.outcome, verdict.reason = "lost", f"stream cut after {len(events)} events ({last})"
        return
    validate_stream(events)
    final = events[-1]["response"]
    verdict.response_id = final["id"]
    if events[-1]["type"] == "response.failed":
        assert reply.shot.expect.fails_mid_stream, f"stream failed, not documented for {reply.shot.row}"
        verdict.outcome, verdict.reason = "failed", f"stream failed: {final['error']['code']}"
        return
    _judge_resource(final, reply, verdict)


def _judge_background(reply: Reply, verdict: Verdict) -> None:
    if reply.final is None:
        verdict.outcome, verdict.reason = "lost", "background response never read back"
        return
    resource = msgspec.json.decode(reply.final)
    validate_resource(resource)
    assert resource["id"] == verdict.response_id, "read back another response"
    status = resource["status"]
    if status not in ENDED:
        verdict.outcome, verdict.reason = "lost", f"background response still {status}"
    elif status == "failed":
        error = resource["error"]
        assert error and error["message"], "failed without an error"
        # A job whose runs were all cut short (a replica stopping, Redis away as a run ended)
        # ends so whatever its fault: a long one spans several fault windows.
        documented = reply.shot.expect.statuses or reply.shot.expect.fails_mid_stream or (
            error["message"].startswith(RUNS_EXHAUSTED))
        assert documented, f"background response failed ({error['code']}: {error['message']}), not documented " \
                           f"for {reply.shot.row}"
        verdict.outcome, verdict.reason = "failed", f"background failed: {error['code']}: {error['message'][:120]}"
    else:
        _judge_resource(resource, reply, verdict)


def _judge_resource(resource: dict[str, Any], reply: Reply, verdict: Verdict) -> None:
    assert resource["status"] in ("completed", "incomplete"), f"ended {resource['status']}"
    texts = [part["text"] for item in resource["output"] if item["type"] == "message"
             for part in item["content"] if part["type"] == "output_text"]
    expected = reply.shot.expected_text()
    assert texts and texts[-1] == expected, f"answer {texts[-1:]!r}, expected {expected!r}"
    usage = resource["usage"]
    verdict.usage = (usage["input_tokens"], usage["output_tokens"])
    verdict.stored = resource["store"]
    verdict.outcome = "completed"
