"""The case machinery every ``test_<dialect>_translation`` shares.

A *case* replays one recorded interaction: the Responses request a client would send for what the
recording's client sent, the ``Normalisation``s that reconcile the recorded request body with the
adapter's (each says why and must change something, so a stale one fails), and what must come
out: an ``Outcome`` (normalised output items, usage, upstream model, tier, status) or a
``Failure`` (the ``GatewayError`` the adapter maps the reply to, carrying no credential).

A test file declares its ``CASES`` and ``SKIPPED``, parametrises with ``case_params`` and, per case::

    recording = load(path, interactions=[case.interaction])
    request = decoded_request(case.body(), deployment)         # or converted_request
    await check_case(case, recording, provider.prepare(request), provider.run(request),
                     headers={"Authorization": f"Bearer {API_KEY}"})

Vocabulary
    ``Long`` (a long text by prefix, suffix and length); output items as ``summary`` writes them:
    ``text``, ``call``, ``thought``; input items: ``user``, ``system``, ``assistant``, ``fc``,
    ``fco``, ``input_text``; ``recorded`` (a value from a recorded request body); ``BOOK_SCHEMA``
    and ``BOOK_JSON`` (a structured output several recordings share).
Cases
    ``Case``, ``Outcome``, ``Failure``; ``case_params`` (the parametrisation, skips included).
Request bodies
    ``Normalisation`` (a dotted path: ``*`` every list element, digits a position), ``Ignore``,
    ``normalise``, ``assert_same_body``.
Requests and replies
    ``decoded_request`` / ``converted_request`` (what the engine hands the adapter),
    ``offline`` (``prepare`` without a session), ``collect``, ``play``, ``replayed``, ``build``,
    ``summary``, ``usage_tuple``, ``to_json``, ``validate``.
Checks
    ``check_case`` (all of a recorded case), and its parts ``check_sent``, ``check_failure``,
    ``check_outcome``, ``check_result``; ``recorded_ids`` and ``assert_accounted_for`` (every
    recorded interaction is a case or skipped with a reason).
Streams
    ``chunked_stream`` (a body handed over a few bytes at a time), ``no_error`` (a mapper for
    decoder tests that expect no error).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import pytest
from vcr.stubs import aiohttp_stubs

from providers.base import PreparedCall
from proxy.decoding import decode_create_request
from proxy.errors import GatewayError
from proxy.schema import events as ev
from proxy.schema.codec import encode
from proxy.schema.content import OutputText, ReasoningText, Refusal
from proxy.schema.deltas import Delta
from proxy.schema.items import FunctionCall, Item, Message, Reasoning
from proxy.schema.request import CreateResponseBody
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, UpstreamRequest
from proxy.streaming import ResponseBuilder
from tests.conformance.cassette import Interaction, Recording, SentRequest, fixtures_dir, load, replay, synthetic
from tests.spec_validation import validate_resource, validate_stream

API_KEY = "test-key"
"""The key every test deployment carries; no error message may show it."""
ALIAS = "team-model"
"""The model name callers use; the deployment names the upstream's."""
ANY: Any = object()
"""An ``Ignore`` value that matches whatever the recording holds."""


# -- vocabulary --------------------------------------------------------------------------------
class Long:
    """Expected long text: equal when prefix, suffix and length all match."""

    def __init__(self, prefix: str, suffix: str, length: int) -> None:
        self.prefix, self.suffix, self.length = prefix, suffix, length

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, str) and len(other) == self.length and other.startswith(self.prefix)
                and other.endswith(self.suffix))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Long({self.prefix!r}...{self.suffix!r}, {self.length})"


def text(value: Any, phase: str | None = None) -> dict[str, Any]:
    """An output message of one text part (with its ``phase``, when it has one)."""
    item: dict[str, Any] = {"type": "message", "content": [("output_text", value)]}
    if phase:
        item["phase"] = phase
    return item


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A function call, as output item or as input item (``fc``)."""
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


fc = call


def thought(value: Any) -> dict[str, Any]:
    """An output reasoning item holding ``value`` as its raw content and no summary."""
    return {"type": "reasoning", "content": [value], "summary": []}


def user(content: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": content}


def system(content: Any) -> dict[str, Any]:
    return {"type": "message", "role": "system", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": content}


def fco(call_id: str, output: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def input_text(value: str) -> dict[str, Any]:
    return {"type": "input_text", "text": value}


BOOK_SCHEMA = {
    "$defs": {"Author": {
        "description": "The author of a book.",
        "properties": {"first_name": {"title": "First Name", "type": "string"},
                       "last_name": {"title": "Last Name", "type": "string"}},
        "required": ["first_name", "last_name"], "title": "Author", "type": "object", "additionalProperties": False}},
    "description": "A book with a rating. The title should be in all caps!",
    "properties": {"title": {"title": "Title", "type": "string"}, "author": {"$ref": "#/$defs/Author"},
                   "rating": {"description": "For testing purposes, the rating should be 7", "title": "Rating",
                              "type": "integer"}},
    "required": ["title", "author", "rating"], "title": "Book", "type": "object", "additionalProperties": False,
}
"""The structured-output schema (Mirascope's ``Book``) several providers' recordings ask for."""
BOOK_JSON = '{"title":"THE NAME OF THE WIND","author":{"first_name":"Patrick","last_name":"Rothfuss"},"rating":7}'
"""What the OpenAI models answered for it."""


def recorded(cassette: str, interaction: int, *path: str | int) -> Any:
    """A value from a recorded request body (payloads too long to repeat in a case)."""
    value = load(cassette, interactions=[interaction]).recorded_requests[0]
    for step in path:
        value = value[step]
    return value


# -- cases -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    output: list[dict[str, Any]]
    """The output items as ``summary`` (or the file's own summariser) writes them."""
    usage: tuple[int, int, int, int, int]  # input, cached, output, reasoning, total
    model: str | None = None  # the model the upstream reports
    service_tier: str = "default"
    incomplete: str | None = None


@dataclass(frozen=True)
class Failure:
    error: type[GatewayError]
    status: int
    code: str
    message: str  # a substring of the mapped message
    param: str | None = None
    retryable: bool = False
    hidden: tuple[str, ...] = ()  # upstream text that must not reach the caller


@dataclass(frozen=True)
class Case:
    """One recorded interaction replayed. Files add what their dialect needs by subclassing."""

    id: str
    cassette: str
    interaction: int
    request: Any
    """The Responses request body, or a function that makes it (see ``body``)."""
    expect: Outcome | Failure
    normalise: tuple[Normalisation, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    """The deployment's ``options``."""

    def body(self, *args: Any) -> dict[str, Any]:
        """The request body: ``request`` itself, or what it returns when called with ``args``."""
        return self.request(*args) if callable(self.request) else self.request


def case_params(cases: Sequence[Any], skipped: Mapping[tuple[str, int], str],
                path: Callable[[str], str] = str) -> list[Any]:
    """The cases as pytest parameters, and each skipped interaction as a skipped one whose reason
    names it; ``path`` turns a case's ``cassette`` into its path under the fixtures."""
    params = [pytest.param(case, id=case.id) for case in cases]
    for (cassette, index), reason in skipped.items():
        where = path(cassette)
        params.append(pytest.param(None, id=f"{PurePosixPath(where).name.removesuffix('.yaml')}#{index}",
                                   marks=pytest.mark.skip(reason=f"{where}#{index}: {reason}")))
    return params


# -- request bodies ----------------------------------------------------------------------------
def _nodes(body: Any, steps: list[str]) -> Iterator[Any]:
    """The nodes a dotted path (``*`` = every list element, digits = a list index) reaches."""
    found = [body]
    for step in steps:
        reached = []
        for node in found:
            if step == "*" and isinstance(node, list):
                reached += node
            elif step.isdigit() and isinstance(node, list) and int(step) < len(node):
                reached.append(node[int(step)])
            elif isinstance(node, dict) and step in node:
                reached.append(node[step])
        found = reached
    yield from found


class Normalisation:
    """A documented difference between a recorded request body and the adapter's. ``apply``
    rewrites a body in place (the recorded one; with ``added``, a copy of the prepared one) and
    returns how many places it changed: one that changes nothing is stale and fails the case."""

    path: str
    why: str
    added: bool = False

    def apply(self, body: Any) -> int:
        *parents, last = self.path.split(".")
        return sum(self._at(node, last) for node in _nodes(body, parents))

    def _at(self, node: Any, key: str) -> int:
        """Rewrite ``node[key]``; how many places changed."""
        raise NotImplementedError


@dataclass(frozen=True)
class Ignore(Normalisation):
    """A key (or list element) one side sends and the other need not: by default one the
    recording's client sent that the adapter leaves out, with ``added`` one the adapter sends
    that the recording lacks. Only ``value`` is ignored, unless it is ``ANY``."""

    path: str
    why: str
    value: Any = ANY
    added: bool = False

    def _at(self, node: Any, key: str) -> int:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            if self.value is ANY or node[int(key)] == self.value:
                del node[int(key)]
                return 1
            return 0
        if not isinstance(node, dict) or key not in node or (self.value is not ANY and node[key] != self.value):
            return 0
        del node[key]
        return 1


def normalise(body: Any, normalisations: Sequence[Any]) -> None:
    """Apply each normalisation (anything with ``apply(body) -> int``) to ``body``; each must
    change something."""
    for normalisation in normalisations:
        assert normalisation.apply(body) > 0, f"stale {normalisation!r}: it matches nothing"


def assert_same_body(prepared: dict[str, Any], recorded_body: dict[str, Any],
                     normalisations: Sequence[Normalisation]) -> None:
    """``prepared`` equals ``recorded_body`` up to ``normalisations``, each of which must match."""
    prepared = copy.deepcopy(prepared)
    normalise(prepared, [n for n in normalisations if n.added])
    normalise(recorded_body, [n for n in normalisations if not n.added])
    assert prepared == recorded_body


# -- requests and replies ----------------------------------------------------------------------
def _upstream(body: CreateResponseBody, items: list[Item], tools: list[Any], tool_choice: Any,
              deployment: Deployment) -> UpstreamRequest:
    return UpstreamRequest(body=body, items=items, tools=tools, tool_choice=tool_choice,
                           instructions=body.instructions if isinstance(body.instructions, str) else None,
                           deployment=deployment, stream=body.stream is True)


def decoded_request(body: dict[str, Any], deployment: Deployment, *, bypass: tuple[str, ...] = ()) -> UpstreamRequest:
    """What the engine hands the adapter for this create body (no stored history), decoded as the
    gateway decodes an incoming body. ``bypass`` fields skip the decoder (which would refuse
    them) and are set afterwards."""
    decoded = decode_create_request(json.dumps({k: v for k, v in body.items() if k not in bypass}).encode())
    fields = msgspec.structs.replace(decoded.body, **{name: body[name] for name in bypass if name in body})
    return _upstream(fields, decoded.input, decoded.tools, decoded.tool_choice, deployment)


def converted_request(body: dict[str, Any], deployment: Deployment, *,
                      bypass: tuple[str, ...] = ()) -> UpstreamRequest:
    """What the engine hands the adapter for this create body (no stored history), converted to
    the request Struct without the decoder's checks; ``bypass`` fields are set after converting."""
    converted = msgspec.convert({k: v for k, v in body.items() if k not in bypass}, CreateResponseBody)
    fields = msgspec.structs.replace(converted, **{name: body[name] for name in bypass if name in body})
    raw_input = fields.input
    items: list[Item] = ([Message(role="user", content=raw_input)] if isinstance(raw_input, str)
                         else list(raw_input) if isinstance(raw_input, list) else [])
    tool_choice = fields.tool_choice if fields.tool_choice not in (msgspec.UNSET, None) else None
    return _upstream(fields, items, list(fields.tools or []), tool_choice, deployment)


def offline(provider: Callable[[Any], Any], request: UpstreamRequest, *, items: list[Item] | None = None,
            tools: list[Any] | None = None, tool_choice: Any = None, stream: bool | None = None) -> PreparedCall:
    """What ``provider`` would send for ``request`` with the given fields replaced; ``prepare``
    does no I/O, so the adapter gets no session."""
    if items is not None:
        request.items = items
    if tools is not None:
        request.tools = tools
    if tool_choice is not None:
        request.tool_choice = tool_choice
    if stream is not None:
        request.stream = stream
    prepared: PreparedCall = provider(None).prepare(request)
    return prepared


async def collect(deltas: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in deltas]


async def play(recording: Recording, deltas: AsyncIterator[Delta]) -> tuple[SentRequest, list[Delta] | GatewayError]:
    """Replay ``recording`` (all of it must be played) while collecting ``deltas``: the one request
    that went out, and the deltas or the ``GatewayError`` raised."""
    result: list[Delta] | GatewayError
    with replay(recording) as cassette:
        try:
            result = await collect(deltas)
        except GatewayError as exc:
            result = exc
    assert len(cassette.sent_requests) == 1
    return cassette.sent_requests[0], result


async def replayed(deltas: AsyncIterator[Delta], *interactions: Interaction) -> list[Delta]:
    """``deltas`` collected while ``interactions`` (built in code) are replayed."""
    with replay(synthetic(*interactions)):
        return await collect(deltas)


def build(deltas: list[Delta], builder: ResponseBuilder | None = None) -> tuple[ResponseBuilder, list[Any]]:
    """The response the engine builds from ``deltas``, and its events; with ``builder``, as the
    next turn of that response."""
    if builder is None:
        builder = ResponseBuilder(ResponseResource(id="resp_test", created_at=0, model=ALIAS))
        events = builder.start()
    else:
        events = builder.next_turn()
    for delta in deltas:
        events += builder.feed(delta)
    events += builder.complete()
    return builder, events


def to_json(value: Any) -> Any:
    return json.loads(encode(value))


def validate(resource: ResponseResource, events: list[Any]) -> None:
    """The resource and every event against the spec's schemas, the events in lifecycle order."""
    validate_resource(to_json(resource))
    validate_stream([to_json(event) for event in events])


def message_parts(item: Message) -> list[tuple[str, str]]:
    """A message's parts as ``(type, text)``; only output text and refusals may be there."""
    parts = [("output_text", p.text) if isinstance(p, OutputText) else ("refusal", p.refusal)
             for p in item.content if isinstance(p, OutputText | Refusal)]
    assert len(parts) == len(item.content), item
    return parts


def reasoning_summary(item: Reasoning) -> dict[str, Any]:
    """A reasoning item as ``thought`` writes it: raw content texts and summary texts."""
    content = [p.text for p in item.content or [] if isinstance(p, ReasoningText)]
    return {"type": "reasoning", "content": content, "summary": [p.text for p in item.summary]}


def summary(resource: ResponseResource, *,
            reasoning: Callable[[Reasoning], dict[str, Any]] = reasoning_summary) -> list[dict[str, Any]]:
    """The output items as ``text``, ``call`` and (by ``reasoning``) reasoning dicts; any other
    item fails."""
    out: list[dict[str, Any]] = []
    for item in resource.output:
        if isinstance(item, Message):
            entry: dict[str, Any] = {"type": "message", "content": message_parts(item)}
            if isinstance(item.phase, str):
                entry["phase"] = item.phase
            out.append(entry)
        elif isinstance(item, FunctionCall):
            out.append(call(item.call_id, item.name, item.arguments))
        elif isinstance(item, Reasoning):
            out.append(reasoning(item))
        else:
            raise AssertionError(f"unexpected output item {item!r}")
    return out


def usage_tuple(resource: ResponseResource) -> tuple[int, int, int, int, int]:
    usage = resource.usage
    assert usage is not None
    return (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens,
            usage.output_tokens_details.reasoning_tokens, usage.total_tokens)


# -- checks ------------------------------------------------------------------------------------
def check_sent(sent: SentRequest, prepared: PreparedCall, headers: Mapping[str, str | None]) -> None:
    """What aiohttp sent is the prepared call: URL, JSON body, ``Content-Type: application/json``
    and each of ``headers`` (``None``: absent)."""
    assert sent.url == prepared.url
    assert sent.json() == json.loads(prepared.wire_body())
    assert sent.header("Content-Type") == "application/json"
    for name, value in headers.items():
        assert sent.header(name) == value, name


def check_failure(error: GatewayError, expect: Failure, secrets: Sequence[str] = (API_KEY,)) -> None:
    """``error`` is the expected one, and neither its message nor its text shows any of
    ``secrets`` or the upstream text the failure hides."""
    assert type(error) is expect.error, error
    assert (error.status, error.code, error.param, error.retryable) == (
        expect.status, expect.code, expect.param, expect.retryable)
    assert expect.message in error.message
    for secret in (*secrets, *expect.hidden):
        assert secret not in error.message
        assert secret not in str(error)


def check_outcome(deltas: list[Delta], expect: Outcome, *, pieces: int = 0,
                  summarise: Callable[[ResponseResource], list[dict[str, Any]]] = summary
                  ) -> tuple[ResponseBuilder, list[Any]]:
    """The response built from ``deltas`` is ``expect``: output, usage, upstream model, tier, status
    (every item completed but the last, which is incomplete with the response), the terminal
    event, valid against the spec, with no empty delta event. With ``pieces``, a streamed reply
    must have come in more than ``pieces`` deltas per output item, plus two. Returns the builder
    and the events."""
    builder, events = build(deltas)
    resource = builder.resource
    assert summarise(resource) == expect.output
    assert usage_tuple(resource) == expect.usage
    assert builder.upstream_model == expect.model
    assert resource.service_tier == expect.service_tier
    if expect.incomplete:
        assert resource.status == "incomplete"
        assert resource.incomplete_details is not None
        assert resource.incomplete_details.reason == expect.incomplete
        assert isinstance(events[-1], ev.ResponseIncomplete)
    else:
        assert resource.status == "completed"
        assert resource.incomplete_details is None
        assert isinstance(events[-1], ev.ResponseCompleted)
    statuses = [getattr(item, "status", None) for item in resource.output]
    assert statuses == ["completed"] * (len(statuses) - 1) + ["incomplete" if expect.incomplete else "completed"]
    validate(resource, events)
    assert all(getattr(event, "delta", None) != "" for event in events), "an empty delta event"
    if pieces:  # a streamed reply arrives in pieces; a whole one as one delta per item
        assert len(deltas) > pieces * len(expect.output) + 2
    return builder, events


def check_result(result: list[Delta] | GatewayError, expect: Outcome | Failure, *,
                 secrets: Sequence[str] = (API_KEY,), pieces: int = 0,
                 summarise: Callable[[ResponseResource], list[dict[str, Any]]] = summary) -> None:
    """``check_failure`` or ``check_outcome``, whichever ``expect`` calls for."""
    if isinstance(expect, Failure):
        assert isinstance(result, GatewayError), result
        check_failure(result, expect, secrets)
    else:
        assert isinstance(result, list), result
        check_outcome(result, expect, pieces=pieces, summarise=summarise)


async def check_case(case: Case, recording: Recording, prepared: PreparedCall, deltas: AsyncIterator[Delta], *,
                     headers: Mapping[str, str | None], url: str | None = None, secrets: Sequence[str] = (API_KEY,),
                     pieces: int = 0, summarise: Callable[[ResponseResource], list[dict[str, Any]]] = summary
                     ) -> tuple[SentRequest, list[Delta] | GatewayError]:
    """A recorded case end to end: the ``prepared`` call is a POST to the recorded URL (or ``url``)
    with the recorded body up to the case's normalisations; replaying ``recording`` while
    ``deltas`` (the adapter's ``run``) are collected sends exactly that, with ``headers``; and the
    result is what the case expects (``check_result``). Returns what was sent and the result."""
    interaction = recording.interactions[0]
    assert prepared.method == interaction.method == "POST"
    assert prepared.url == (interaction.uri if url is None else url)
    assert_same_body(json.loads(prepared.wire_body()), recording.recorded_requests[0], case.normalise)
    sent, result = await play(recording, deltas)
    check_sent(sent, prepared, headers)
    check_result(result, case.expect, secrets=secrets, pieces=pieces, summarise=summarise)
    return sent, result


def recorded_ids(folder: str, name: Callable[[Path], str] = lambda path: f"{path.parent.name}/{path.name}"
                 ) -> set[tuple[str, int]]:
    """``(cassette, interaction index)`` of every interaction recorded in ``folder``; ``name``
    writes a cassette's path as the cases do."""
    return {(name(path), interaction.index) for path in sorted((fixtures_dir() / folder).glob("*.yaml"))
            for interaction in load(f"{folder}/{path.name}").interactions}


def assert_accounted_for(cases: Sequence[Any], skipped: Mapping[tuple[str, int], str],
                         interactions: set[tuple[str, int]]) -> None:
    """Each of the recorded ``interactions`` is one case or skipped with a reason, and every case
    and skip names a recorded interaction."""
    covered = {(case.cassette, case.interaction) for case in cases}
    assert len(covered) == len(cases), "two cases replay the same interaction"
    assert len({case.id for case in cases}) == len(cases), "two cases share an id"
    assert not covered & skipped.keys(), "an interaction is both a case and skipped"
    assert interactions - covered - skipped.keys() == set(), "recorded interactions without a case or a reason"
    assert (covered | skipped.keys()) - interactions == set(), "cases or skips for interactions that do not exist"


# -- streams -----------------------------------------------------------------------------------
def chunked_stream(size: int, pieces: list[bytes]) -> type[aiohttp_stubs.MockStream]:
    """vcrpy's response stream, handing the body over ``size`` bytes at a time as a socket may;
    each piece is appended to ``pieces``. Patch it over ``aiohttp_stubs.MockStream``."""

    class ChunkedStream(aiohttp_stubs.MockStream):
        def __init__(self, body: bytes) -> None:
            super().__init__(body)
            self._whole = body or b""

        def iter_any(self) -> Any:
            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(self._whole), size):
                    pieces.append(self._whole[start:start + size])
                    yield pieces[-1]

            return chunks()

    return ChunkedStream


def no_error(status: int, headers: Any, body: bytes) -> GatewayError:
    """An error mapper for decoder tests in which no error may come."""
    raise AssertionError("no error here")
