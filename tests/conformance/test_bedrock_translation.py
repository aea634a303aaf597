"""Bedrock Converse dialect (``providers.bedrock``) against recorded traffic.

Every interaction of every cassette in ``bedrock/`` is either a ``Case`` below or listed in
``SKIPPED`` with its reason (``test_every_recorded_interaction_is_accounted_for`` enforces that).
A case is the Responses request a client would send for what the recording's client sent. Every
case runs with AWS credentials configured. For each case:

1. ``prepare()`` must produce the recorded request body, except for the keys the case ignores
   (each ``Ignore`` names a path and the exact value, says why, and must match something), and
   the recorded URL in the form aiohttp puts on the wire: yarl turns boto3's ``%3A`` back into
   ``:`` (keeping ``%2F``), and the signature covers that form. The JSON schema of a structured
   output is a JSON *string*; pydantic-ai wrote it with ``json.dumps`` spacing and the adapter
   writes compact JSON, so both are compared parsed;
2. ``run()`` replays the interaction (its URI rewritten to the wire form, which is what vcrpy
   matches): the URL and body bytes aiohttp sent must be the prepared ones, and the SigV4
   ``Authorization`` header must be botocore's signature of exactly those bytes at the sent
   ``X-Amz-Date``, over ``content-type;host;x-amz-date;x-amz-security-token``;
3. the deltas go through ``ResponseBuilder``: the output (items, call ids, names, arguments,
   reasoning text and whether it carries state), usage, status and incomplete reason must be what
   the recording says, and the resource and every event must validate against the spec. Error
   recordings must map to the expected ``GatewayError`` whose message carries no credential.

Expected values were read from the recorded replies by hand (long texts as prefix, suffix and
length). The tests after the cases cover what no recording shows (exception frames, framing,
error types, translation rules, the simulator dialect) with synthetic interactions, ``prepare``
alone, or the simulator on a loopback socket.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import msgspec
import pytest
import yarl
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from vcr.stubs import aiohttp_stubs

from providers.bedrock import BedrockProvider
from providers.sim_dialects.bedrock import DIALECT as SIM_BEDROCK
from providers.sim_dialects.bedrock import encode_message, frame
from providers.simulator import start_simulator
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    RateLimited,
    ServerError,
    UnsupportedFeature,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.schema.content import ReasoningText
from proxy.schema.deltas import Delta, ReasoningState
from proxy.schema.items import Compaction, Item, Message, OpaqueItem, Reasoning
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, Quirks, UpstreamRequest
from tests.conformance._cases import (
    Case,
    Failure,
    Ignore,
    Long,
    Outcome,
    assert_accounted_for,
    assistant,
    build,
    call,
    case_params,
    check_result,
    check_sent,
    chunked_stream,
    collect,
    converted_request,
    fc,
    fco,
    normalise,
    offline,
    play,
    recorded_ids,
    summary,
    text,
    to_json,
    usage_tuple,
    user,
)
from tests.conformance.cassette import Interaction, Recording, load, replay, synthetic
from tests.spec_validation import validate_stream

DIR = "bedrock"
ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-1"
CREDENTIALS = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "session_token": SESSION_TOKEN}
REGION = "us-east-1"
SIGNED = ["content-type", "host", "x-amz-date", "x-amz-security-token"]
HOST = "https://bedrock-runtime.us-east-1.amazonaws.com"
_encode = msgspec.json.Encoder().encode


# -- the vocabulary of cases ---------------------------------------------------------------------
EMPTY_INFERENCE = Ignore("inferenceConfig", "pydantic-ai always sends an empty inferenceConfig; the adapter leaves "
                         "it out when the caller set no sampling or limit", {})
EMPTY_SYSTEM = Ignore("system", "pydantic-ai sends an empty system list; the adapter leaves it out", [])
PYDANTIC_EMPTY = (EMPTY_INFERENCE, EMPTY_SYSTEM)


def thought(*content: Any, state: bool = True) -> dict[str, Any]:
    """A reasoning item: its reasoning text parts, and whether it carries state to send back."""
    return {"type": "reasoning", "content": list(content), "state": state}


def recorded_reply(cassette: str, interaction: int) -> dict[str, Any]:
    reply: dict[str, Any] = load(f"{DIR}/{cassette}", interactions=[interaction]).interactions[0].response_json()
    return reply


def recorded_state(cassette: str, interaction: int) -> str:
    """The reasoning state format ``providers.bedrock_stream`` documents: the recorded
    ``reasoningContent`` block, as compact JSON."""
    block = recorded_reply(cassette, interaction)["output"]["message"]["content"][0]["reasoningContent"]
    reasoning = block["reasoningText"]
    return _encode({"reasoningText": {"text": reasoning["text"], "signature": reasoning["signature"]}}).decode()


def thinking_follow_up() -> dict[str, Any]:
    """Turn 2 of converse-thinking-anthropic: turn 1's reasoning item carries the state the adapter
    emitted (unsealed by the engine), its answer follows as an assistant message."""
    answer = recorded_reply("converse-thinking-anthropic.yaml", 0)["output"]["message"]["content"][1]["text"]
    return {"model": "team-model", "reasoning": {"effort": "low"}, "input": [
        user("How do I cross the street?"),
        {"type": "reasoning", "summary": [],
         "encrypted_content": recorded_state("converse-thinking-anthropic.yaml", 0)},
        assistant(answer),
        user("Considering the way to cross the street, analogously, how do I cross the river?")]}


def downloaded_image() -> str:
    """The JPEG the recording's client downloaded (interaction #0), as the data: URL a client
    sends the gateway."""
    jpeg = load(f"{DIR}/input-image-url-downloaded.yaml", interactions=[0]).interactions[0].response_body
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


WEATHER_PROMPT = "What's the weather in Paris?"
FRANCE_PROMPT = "What is the capital of France?"
CITY_SCHEMA = {"additionalProperties": False, "type": "object", "required": ["city", "country", "population"],
               "properties": {"city": {"type": "string"}, "country": {"type": "string"},
                              "population": {"type": "integer"}}}
TOP_SONG = {"type": "function", "name": "top_song",
            "description": "Get the most popular song played on a radio station.",
            "parameters": {"type": "object", "required": ["sign"], "properties": {
                "sign": {"type": "string", "description": "The call sign for the radio station"}}}}


def weather_tool(description: str, *, closed: bool = True) -> dict[str, Any]:
    parameters: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    if closed:
        parameters["additionalProperties"] = False
    return {"type": "function", "name": "get_weather", "description": description, "parameters": parameters}


CASES: list[Case] = [
    # ---------------------------------------------------------------- plain text, instructions, sampling
    Case("text", "converse-text.yaml", 0,
         {"model": "team-model", "instructions": "You are a chatbot.", "input": "Hello!"},
         Outcome([text("Hello! How can I assist you today? Whether you have questions, need information, or just want "
                       "to chat, I'm here to help.")], (7, 0, 30, 0, 37)),
         normalise=(EMPTY_INFERENCE,)),
    Case("instructions", "converse-instructions.yaml", 0,
         {"model": "team-model", "instructions": "You are a helpful assistant.", "input": FRANCE_PROMPT},
         Outcome([text(Long("The capital of France is Paris. Paris is not only ",
                            "ll as its influence on global culture and cuisine.", 340))], (13, 0, 71, 0, 84)),
         normalise=(EMPTY_INFERENCE,)),
    Case("top-p", "converse-top-p.yaml", 0,
         {"model": "team-model", "instructions": "You are a helpful chatbot.", "input": FRANCE_PROMPT, "top_p": 0.5},
         Outcome([text(Long("The capital of France is Paris. Paris is not only ",
                            " fashion, gastronomy, and international diplomacy.", 197))], (13, 0, 41, 0, 54))),
    Case("max-tokens-incomplete", "converse-max-tokens.yaml", 0,
         {"model": "team-model", "instructions": "You are a helpful chatbot.", "input": FRANCE_PROMPT,
          "max_output_tokens": 5},
         Outcome([text("The capital of France is")], (13, 0, 5, 0, 18), incomplete="max_output_tokens")),
    Case("latency-optimized", "converse-latency-optimized.yaml", 0,
         {"model": "team-model", "instructions": "You are a helpful chatbot.", "input": FRANCE_PROMPT},
         Outcome([text(Long("The capital of France is Paris. It is one of the m",
                            ", diplomacy, commerce, fashion, science, and arts.", 308))], (13, 0, 67, 0, 80)),
         normalise=(EMPTY_INFERENCE,), options={"latency": "optimized"}),
    Case("stream-text", "converse-stream-text.yaml", 0,
         {"model": "team-model", "instructions": "You are a helpful chatbot.", "input": FRANCE_PROMPT,
          "temperature": 0.0, "stream": True},
         Outcome([text(Long("The capital of France is Paris. Paris is not only ",
                            'd to as "The City of Light" or "The City of Love."', 375))], (13, 0, 82, 0, 95))),
    # ---------------------------------------------------------------- structured output
    Case("json-schema", "converse-json-schema-output.yaml", 0,
         {"model": "team-model", "input": [user("What is the capital of France? Give me the city name, country, and "
                                                "population.")],
          "text": {"format": {"type": "json_schema", "name": "CityInfo", "description": "Information about a city.",
                              "schema": CITY_SCHEMA, "strict": True}}},
         Outcome([text('{"city":"Paris","country":"France","population":2161000}')], (211, 0, 18, 0, 229)),
         normalise=PYDANTIC_EMPTY),
    # ---------------------------------------------------------------- tools
    Case("tool-choice-required", "converse-tool-choice-any.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "required",
          "tools": [weather_tool("Get weather for a city", closed=False)]},
         Outcome([call("tooluse_BvssH5zaRF-PkYOc3BFYJA", "get_weather", '{"city":"Paris"}')], (655, 0, 38, 0, 693)),
         normalise=PYDANTIC_EMPTY),
    Case("tool-choice-none", "converse-tool-choice-none.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "none",
          "tools": [weather_tool("Get the current weather for a city.")]},
         Outcome([text(Long("I don't have access to real-time weather data or t",
                            "anything else I can help you with regarding Paris?", 497))], (14, 0, 124, 0, 138)),
         normalise=PYDANTIC_EMPTY),
    Case("tool-call", "converse-tool-roundtrip.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "auto",
          "tools": [weather_tool("Get the current weather for a city.")]},
         Outcome([call("tooluse_XjTErzm6TpyMMpDviNVY3g", "get_weather", '{"city":"Paris"}')], (572, 0, 53, 0, 625)),
         normalise=PYDANTIC_EMPTY),
    Case("tool-result", "converse-tool-roundtrip.yaml", 1,
         {"model": "team-model", "tool_choice": "auto", "tools": [weather_tool("Get the current weather for a city.")],
          "input": [user(WEATHER_PROMPT), fc("tooluse_XjTErzm6TpyMMpDviNVY3g", "get_weather", '{"city": "Paris"}'),
                    fco("tooluse_XjTErzm6TpyMMpDviNVY3g", "Sunny, 22C in Paris")]},
         Outcome([text("The weather in Paris is currently sunny with a temperature of 22°C (approximately 72°F). "
                       "It's a beautiful day!")], (646, 0, 31, 0, 677)),
         normalise=PYDANTIC_EMPTY),
    Case("stream-tool-use", "converse-stream-tool-use.yaml", 0,
         {"model": "team-model", "input": [user("What is the most popular song on WZPZ?")], "tools": [TOP_SONG],
          "stream": True},
         Outcome([call("tooluse_p0X002uYQ9y_0fFkBsyYRg", "top_song", '{"sign": "WZPZ"}')], (353, 0, 38, 0, 391))),
    # ---------------------------------------------------------------- reasoning
    Case("thinking", "converse-thinking-anthropic.yaml", 0,
         {"model": "team-model", "reasoning": {"effort": "low"}, "input": [user("How do I cross the street?")]},
         Outcome([thought(Long("This is a straightforward question about crossing ",
                               "e noting that specific rules may vary by location.", 195)),
                  text(Long("Here are the basic steps for crossing the street s",
                            "ce not all drivers follow traffic rules perfectly.", 1151))], (42, 0, 313, 0, 355)),
         normalise=PYDANTIC_EMPTY),
    Case("thinking-signature-round-trip", "converse-thinking-anthropic.yaml", 1, thinking_follow_up,
         Outcome([thought(Long("The human is asking about crossing a river, using ",
                               "ss a river and the safety considerations involved.", 382)),
                  text(Long("Great analogy! Just like crossing a street, crossi",
                            " an alternate route or wait for better conditions!", 1443))], (334, 0, 432, 0, 766)),
         normalise=PYDANTIC_EMPTY),
    Case("stream-thinking", "converse-stream-thinking.yaml", 0,
         {"model": "team-model", "reasoning": {"effort": "low"}, "input": [user("Hello")], "stream": True},
         Outcome([thought(Long('The user has greeted me with a simple "Hello". I s',
                               " respond warmly and ask how I can help them today.", 193)),
                  text("Hello! It's nice to meet you. How can I help you today?")], (36, 0, 73, 0, 109)),
         normalise=PYDANTIC_EMPTY),
    # ---------------------------------------------------------------- media
    Case("image-as-data-url", "input-image-url-downloaded.yaml", 1,
         lambda: {"model": "team-model", "instructions": "You are a helpful chatbot.", "input": [user([
             {"type": "input_text", "text": "What is this vegetable?"},
             {"type": "input_image", "image_url": downloaded_image()}])]},
         Outcome([text(Long("The image shows a potato. It is oval in shape and ",
                            "ashed potatoes, fries, and potato salad.", 399))], (1837, 0, 82, 0, 1919)),
         normalise=(EMPTY_INFERENCE,)),
    # ---------------------------------------------------------------- errors
    Case("invalid-model", "error-400-invalid-model.yaml", 0, {"model": "team-model", "input": [user("hello")]},
         Failure(InvalidRequest, 400, "model_not_found", "model identifier is invalid", param="model"),
         normalise=PYDANTIC_EMPTY),
    Case("invalid-model-stream", "error-400-invalid-model-stream.yaml", 0,
         {"model": "team-model", "input": [user("hello")], "stream": True},
         Failure(InvalidRequest, 400, "model_not_found", "model identifier is invalid", param="model"),
         normalise=PYDANTIC_EMPTY),
]

# Interactions not replayed as cases, with the reason. Each becomes a skipped test so the report
# lists it; test_every_recorded_interaction_is_accounted_for keeps this list complete.
SKIPPED: dict[tuple[str, int], str] = {
    ("input-image-url-downloaded.yaml", 0):
        "the image download the recording's client made: the gateway does not fetch URLs for a caller (prepare() "
        "does no I/O, and a server-side fetch of caller URLs is an SSRF hole); https image URLs get a 400 "
        "(test_media_by_url_or_file_id_is_refused) and case image-as-data-url replays #1 with the same bytes",
}


# -- helpers -----------------------------------------------------------------------------------
def _deployment(base_url: str = HOST, model: str = "m", **overrides: Any) -> Deployment:
    settings: dict[str, Any] = {"credentials": dict(CREDENTIALS), "region": REGION, **overrides}
    return Deployment(name="test", provider="bedrock-test", dialect="bedrock", base_url=base_url, model=model,
                      **settings)


def _upstream(responses_body: dict[str, Any], deployment: Deployment) -> UpstreamRequest:
    """What the engine hands the adapter for this Responses request (no stored history). A
    ``max_output_tokens`` is set after converting: a recording used 5, below the minimum of 16 the
    gateway's decoder enforces at its own edge, and the adapter passes any value through."""
    return converted_request(responses_body, deployment, bypass=("max_output_tokens",))


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the structured-output schema string parsed (see the module docstring)."""
    try:
        definition = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    except KeyError:
        return body
    copied = json.loads(json.dumps(body))
    copied["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"] = json.loads(definition["schema"])
    return copied


def _wire(uri: str) -> str:
    """A URI as aiohttp sends it (yarl decodes ``%3A``)."""
    return str(yarl.URL(uri))


def _on_the_wire(recording: Recording) -> Recording:
    """The recording with its URIs as aiohttp sends them, which is what vcrpy matches on."""
    return synthetic(*(dataclasses.replace(i, uri=_wire(i.uri)) for i in recording.interactions),
                     name=recording.name)


def _reasoning(item: Reasoning) -> dict[str, Any]:
    content = [part.text for part in item.content or [] if isinstance(part, ReasoningText)]
    assert item.summary == []
    return thought(*content, state=isinstance(item.encrypted_content, str))


def _summary(resource: ResponseResource) -> list[dict[str, Any]]:
    return summary(resource, reasoning=_reasoning)


def _check_sigv4(method: str, url: str, header: Callable[[str], str | None], body: bytes) -> None:
    """The ``Authorization`` header is botocore's SigV4 signature of exactly this request."""
    amz_date = header("X-Amz-Date")
    assert amz_date is not None and re.fullmatch(r"\d{8}T\d{6}Z", amz_date)
    assert header("X-Amz-Security-Token") == SESSION_TOKEN
    found = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/bedrock/aws4_request, "
                         r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", header("Authorization") or "")
    assert found is not None, header("Authorization")
    assert found.group(1, 2, 3) == (ACCESS_KEY, amz_date[:8], REGION)
    assert found.group(4).split(";") == SIGNED
    again = AWSRequest(method=method, url=url, data=body, headers={
        name: header(name) for name in ("Content-Type", "X-Amz-Date", "X-Amz-Security-Token")})
    again.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    assert found.group(5) == signer.signature(signer.string_to_sign(again, signer.canonical_request(again)), again)


# -- the recorded cases ------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CASES, SKIPPED, lambda cassette: f"{DIR}/{cassette}"))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording = load(f"{DIR}/{case.cassette}", interactions=[case.interaction])
    interaction = recording.interactions[0]
    expected_body = recording.recorded_requests[0]
    normalise(expected_body, case.normalise)
    base_url, _, rest = interaction.uri.partition("/model/")
    deployment = _deployment(base_url, unquote(rest.rsplit("/", 1)[0]), options=case.options)
    request = _upstream(case.body(), deployment)
    provider = BedrockProvider(session)

    prepared = provider.prepare(request)
    assert prepared.method == interaction.method == "POST"
    assert prepared.url == _wire(interaction.uri)
    assert _comparable(prepared.body) == _comparable(expected_body)

    sent, result = await play(_on_the_wire(recording), provider.run(request))
    check_sent(sent, prepared, {})
    assert sent.body == _encode(prepared.body)
    _check_sigv4(sent.method, sent.url, sent.header, sent.body)
    check_result(result, case.expect, secrets=tuple(CREDENTIALS.values()), pieces=2 if request.stream else 0,
                 summarise=_summary)


def test_every_recorded_interaction_is_accounted_for() -> None:
    recorded = recorded_ids(DIR, lambda path: path.name)
    assert len({cassette for cassette, _ in recorded}) == 16
    assert_accounted_for(CASES, SKIPPED, recorded)


async def test_reasoning_signature_round_trip(session: aiohttp.ClientSession) -> None:
    """Turn 1's reasoning state, as the adapter emits it, is what turn 2 must send back: the case
    thinking-signature-round-trip builds turn 2 from ``recorded_state``, this ties the two."""
    first = next(case for case in CASES if case.id == "thinking")
    request = _upstream(first.request if isinstance(first.request, dict) else {},
                        _deployment(model="us.anthropic.claude-sonnet-4-20250514-v1:0"))
    with replay(_on_the_wire(load(f"{DIR}/converse-thinking-anthropic.yaml", interactions=[0]))):
        deltas = await collect(BedrockProvider(session).run(request))
    states = [delta.encrypted_content for delta in deltas if isinstance(delta, ReasoningState)]
    assert states == [recorded_state("converse-thinking-anthropic.yaml", 0)]
    assert json.loads(states[0])["reasoningText"]["signature"].startswith("Eu4CCkgIBxABGAIq")


async def test_streamed_reasoning_state_carries_the_whole_text_and_signature(
        session: aiohttp.ClientSession) -> None:
    request = _upstream({"model": "team-model", "reasoning": {"effort": "low"}, "input": "Hello", "stream": True},
                        _deployment(model="us.anthropic.claude-sonnet-4-20250514-v1:0"))
    with replay(_on_the_wire(load(f"{DIR}/converse-stream-thinking.yaml"))):
        deltas = await collect(BedrockProvider(session).run(request))
    (state,) = [json.loads(delta.encrypted_content) for delta in deltas if isinstance(delta, ReasoningState)]
    block = state["reasoningText"]
    assert set(state) == {"reasoningText"} and set(block) == {"text", "signature"}
    assert block["text"] == Long('The user has greeted me with a simple "Hello". I s',
                                 " respond warmly and ask how I can help them today.", 193)
    assert block["signature"].startswith("Eu0CCkgIBxABGAIqQJDccbDQkr81n7QjZ0Fi43umSvw0")


@pytest.mark.parametrize("size", [1, 5, 13, 100_000])
async def test_eventstream_frames_across_chunk_boundaries(session: aiohttp.ClientSession,
                                                          monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    recording = _on_the_wire(load(f"{DIR}/converse-stream-tool-use.yaml"))
    pieces: list[bytes] = []
    monkeypatch.setattr(aiohttp_stubs, "MockStream", chunked_stream(size, pieces))
    request = _upstream({"model": "team-model", "input": "x", "tools": [TOP_SONG], "stream": True},
                        _deployment(model="anthropic.claude-3-haiku-20240307-v1:0"))
    with replay(recording, require_all_played=False):
        deltas = await collect(BedrockProvider(session).run(request))
    assert len(pieces) == -(-len(recording.interactions[0].response_body) // size)
    assert _summary(build(deltas)[0].resource) == [call("tooluse_p0X002uYQ9y_0fFkBsyYRg", "top_song",
                                                          '{"sign": "WZPZ"}')]


# -- authentication and deployment data --------------------------------------------------------
def test_model_ids_are_path_encoded_and_arns_keep_their_slash() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    prepared = BedrockProvider(None).prepare(  # type: ignore[arg-type]  # prepare does no I/O
        _upstream({"model": "team-model", "input": "x", "stream": True}, _deployment(model=arn)))
    assert prepared.url == (f"{HOST}/model/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile"
                            "%2Fa1b2c3/converse-stream")
    assert str(yarl.URL(prepared.url)) == prepared.url  # aiohttp sends it unchanged: the signed path
    _check_sigv4("POST", prepared.url, prepared.headers.get, _encode(prepared.body))


def test_region_comes_from_the_host_and_is_required_for_signing() -> None:
    def signed(deployment: Deployment) -> dict[str, str]:
        return BedrockProvider(None).prepare(  # type: ignore[arg-type]
            _upstream({"model": "team-model", "input": "x"}, deployment)).headers

    headers = signed(_deployment(region=None))
    _check_sigv4("POST", f"{HOST}/model/m/converse", headers.get, _encode({"messages": [
        {"role": "user", "content": [{"text": "x"}]}]}))
    with pytest.raises(ServerError, match="no region"):
        signed(_deployment("https://bedrock.example.test", region=None))


def test_bearer_api_key_and_unsigned() -> None:
    def headers(deployment: Deployment) -> dict[str, str]:
        return BedrockProvider(None).prepare(  # type: ignore[arg-type]
            _upstream({"model": "team-model", "input": "x"}, deployment)).headers

    bearer = headers(_deployment(credentials={}, api_key="bedrock-api-key", headers={"X-Team": "research"}))
    assert bearer == {"X-Team": "research", "Authorization": "Bearer bedrock-api-key",
                      "Content-Type": "application/json"}
    assert headers(_deployment(credentials={}, region=None)) == {"Content-Type": "application/json"}


# -- request translation without a recording ---------------------------------------------------
def _prepare(body: dict[str, Any], *, items: list[Item] | None = None, tools: list[Any] | None = None,
             tool_choice: Any = None, **deployment: Any) -> dict[str, Any]:
    request = _upstream({"model": "team-model", **body}, _deployment(credentials={}, **deployment))
    return offline(BedrockProvider, request, items=items, tools=tools, tool_choice=tool_choice).body


WEATHER = weather_tool("Weather")
SPEC = {"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": WEATHER["parameters"]}}}


def test_system_hoisting_alternation_and_tool_results_first() -> None:
    body = _prepare({"instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": "Answer in French."}, user("Hi"), assistant(" "),
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Late rule."}]},
        user([{"type": "input_text", "text": "there"}, {"type": "input_text", "text": "  "}]),
        fc("c1", "get_weather", '{"city":"Oslo"}'), fc("c2", "get_weather", ""),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "unsigned"}]},
        fco("c1", "rainy"), user("and?"), fco("c2", [{"type": "input_text", "text": "sunny"}]),
        assistant([{"type": "output_text", "text": "Done."}, {"type": "refusal", "refusal": "No."}])],
        "tools": [WEATHER]})
    assert body["system"] == [{"text": "Be brief."}, {"text": "Answer in French."}, {"text": "Late rule."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]},
        {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "c1", "name": "get_weather", "input": {"city": "Oslo"}}},
            {"toolUse": {"toolUseId": "c2", "name": "get_weather", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "c1", "content": [{"text": "rainy"}], "status": "success"}},
            {"toolResult": {"toolUseId": "c2", "content": [{"text": "sunny"}], "status": "success"}},
            {"text": "and?"}]},
        {"role": "assistant", "content": [{"text": "Done."}, {"text": "No."}]}]
    assert body["toolConfig"] == {"tools": [SPEC]}


def test_conversation_must_start_with_the_user() -> None:
    with pytest.raises(InvalidRequest, match="start with a user message") as caught:
        _prepare({"input": [assistant("Hello"), user("Hi")]})
    assert caught.value.param == "input"


def test_foreign_call_ids_are_mapped_consistently_and_bad_arguments_refused() -> None:
    body = _prepare({"tools": [WEATHER], "input": [
        user("q"), fc("call/with spaces+" + "x" * 40, "get_weather", "{}"), fco("call/with spaces+" + "x" * 40, "ok")]})
    used = body["messages"][1]["content"][0]["toolUse"]["toolUseId"]
    assert used == body["messages"][2]["content"][0]["toolResult"]["toolUseId"]
    assert re.fullmatch(r"[a-zA-Z0-9_.:-]{1,64}", used) and used.startswith("call_with_spaces_")
    with pytest.raises(InvalidRequest) as caught:
        _prepare({"tools": [WEATHER], "input": [user("q"), fc("c1", "get_weather", "[1, 2]")]})
    assert caught.value.param == "input[1].arguments"


@pytest.mark.parametrize(("choice", "tools", "history", "config"), [
    ("auto", [WEATHER], False, {"tools": [SPEC], "toolChoice": {"auto": {}}}),
    ("required", [WEATHER], False, {"tools": [SPEC], "toolChoice": {"any": {}}}),
    ({"type": "function", "name": "get_weather"}, [WEATHER], False,
     {"tools": [SPEC], "toolChoice": {"tool": {"name": "get_weather"}}}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]},
     [TOP_SONG, WEATHER], False, {"tools": [SPEC], "toolChoice": {"any": {}}}),
    ("none", [WEATHER], False, None),
    ("none", [WEATHER], True, None),  # the tool history goes as text: Converse has no "none"
    ("auto", [], False, None),
], ids=["auto", "required", "function", "allowed-tools", "none", "none-with-tool-history", "auto-without-tools"])
def test_tool_choice(choice: Any, tools: list[Any], history: bool, config: Any) -> None:
    items = [user("q"), fc("c1", "get_weather", "{}"), fco("c1", "ok")] if history else [user("q")]
    body = _prepare({"input": items, "tools": tools, "tool_choice": choice})
    assert body.get("toolConfig") == config
    if history and choice == "none":
        assert [m["content"] for m in body["messages"]] == [
            [{"text": "q"}], [{"text": "[called get_weather with {}]"}], [{"text": "[result of that call: ok]"}]]


def test_tool_choice_refusals_and_strict_tools() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": [user("q"), fc("c1", "get_weather", "{}"), fco("c1", "ok")]})
    assert caught.value.param == "tools"
    with pytest.raises(InvalidRequest) as refused:
        _prepare({"input": "q", "tool_choice": "required"})
    assert refused.value.param == "tool_choice"
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "q", "tools": [WEATHER]}, tool_choice=OpaqueItem({"type": "file_search"}))
    assert caught.value.param == "tool_choice"
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "q"}, tools=[OpaqueItem({"type": "web_search"})])
    assert caught.value.param == "tools[0]"
    strict = _prepare({"input": "q", "tools": [{"type": "function", "name": "f", "description": "", "strict": True}]})
    assert strict["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}, "strict": True}}]}


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAIAAAUAAarVyFEAAAAASUVORK5CYII="


def test_images_and_documents_from_data_urls() -> None:
    body = _prepare({"input": [user([
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}"},
        {"type": "input_file", "filename": "Q3 report_v2.final.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        {"type": "input_file", "filename": "notes.md", "file_data": "data:application/octet-stream,%23%20Hi"}])]})
    assert body["messages"][0]["content"] == [
        {"text": "look"},
        {"image": {"format": "png", "source": {"bytes": PIXEL}}},
        {"document": {"format": "pdf", "name": "Q3 report v2 final", "source": {"bytes": "JVBE"}}},
        {"document": {"format": "md", "name": "notes", "source": {"bytes": base64.b64encode(b"# Hi").decode()}}}]


@pytest.mark.parametrize(("part", "words"), [
    ({"type": "input_image", "image_url": "https://example.test/a.png"}, "data: URL"),
    ({"type": "input_image", "file_id": "file_1"}, "data: URL"),
    ({"type": "input_image", "image_url": "data:image/bmp;base64,Qk0="}, "image/bmp"),
    ({"type": "input_file", "file_url": "https://example.test/a.pdf"}, "data: URL"),
    ({"type": "input_file", "filename": "a.exe", "file_data": "data:application/x-msdownload;base64,TVo="}, "files"),
    ({"type": "input_video", "video_url": "https://example.test/v.mp4"}, "input_video"),
], ids=["image-url", "image-file-id", "image-bmp", "file-url", "file-exe", "video"])
def test_media_by_url_or_file_id_is_refused(part: dict[str, Any], words: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": [user([{"type": "input_text", "text": "x"}, part])]})
    assert caught.value.param == "input[0].content[1]"
    assert words in caught.value.message


def test_parameters_mapping() -> None:
    body = _prepare({"input": "x", "max_output_tokens": 2048, "temperature": 0.2, "top_p": 0.9,
                     "presence_penalty": 0, "top_logprobs": 0, "service_tier": "flex", "parallel_tool_calls": False,
                     "metadata": {"a": "b"}, "reasoning": {"effort": "high", "summary": "auto"},
                     "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "x",
                                                             "schema": {"type": "object"}}}},
                    model="anthropic.claude-sonnet-4-5-20250929-v1:0", options={"latency": "standard"})
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "x"}]}],
        "inferenceConfig": {"maxTokens": 2048, "temperature": 0.2, "topP": 0.9},
        "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
            "name": "x", "schema": '{"type":"object"}'}}}},
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2047}},
        "serviceTier": {"type": "flex"}, "performanceConfig": {"latency": "standard"}}
    plain = _prepare({"input": "x", "service_tier": "auto", "reasoning": {"effort": "none"}})
    assert plain == {"messages": [{"role": "user", "content": [{"text": "x"}]}]}


@pytest.mark.parametrize(("body", "param"), [
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format"),
    ({"reasoning": {"effort": "medium"}}, "reasoning.effort"),
    ({"reasoning": {"effort": "low"}, "max_output_tokens": 1024}, "max_output_tokens"),
])
def test_unsupported_parameters_are_refused(body: dict[str, Any], param: str) -> None:
    model = "anthropic.claude-x" if "max_output_tokens" in body else "amazon.nova-pro-v1:0"
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", **body}, model=model)
    assert (caught.value.param, caught.value.status) == (param, 400)


def test_reasoning_effort_by_model_family() -> None:
    effort = {"input": "x", "reasoning": {"effort": "minimal"}}
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    forced = _prepare(effort, model=arn, options={"model_family": "anthropic"})
    assert forced["additionalModelRequestFields"] == thinking
    assert "additionalModelRequestFields" not in _prepare(effort, model="amazon.nova-pro-v1:0",
                                                          quirks=Quirks(reasoning_effort=False))
    with pytest.raises(ServerError, match="latency"):
        _prepare({"input": "x"}, options={"latency": "fast"})


def test_reasoning_items_go_back_only_with_their_state() -> None:
    redacted = json.dumps({"redactedContent": "c2VjcmV0"})
    items = [user("q"), {"type": "reasoning", "summary": [], "encrypted_content": redacted},
             {"type": "reasoning", "summary": [], "encrypted_content": "not json"},
             {"type": "reasoning", "summary": [], "encrypted_content": '{"other": 1}'},
             {"type": "reasoning", "summary": [{"type": "summary_text", "text": "no state"}]},
             assistant("a"), user("again")]
    assert _prepare({"input": items})["messages"][1] == {
        "role": "assistant", "content": [{"reasoningContent": {"redactedContent": "c2VjcmV0"}}, {"text": "a"}]}


@pytest.mark.parametrize("item", [
    OpaqueItem({"type": "web_search_call", "id": "ws_1"}),
    Compaction(encrypted_content="abc"),
], ids=["opaque", "compaction"])
def test_items_outside_converse_are_refused(item: Item) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, items=[Message(role="user", content="q"), item])
    assert caught.value.param == "input[1]"


# -- replies without a recording (synthetic interactions) --------------------------------------
URL = f"{HOST}/model/m/converse"
STREAM_URL = f"{HOST}/model/m/converse-stream"
EVENTSTREAM = {"Content-Type": "application/vnd.amazon.eventstream"}


async def _run_synthetic(session: aiohttp.ClientSession, interaction: Interaction) -> list[Delta]:
    request = _upstream({"model": "team-model", "input": "x", "stream": interaction.uri == STREAM_URL},
                        _deployment(credentials={}))
    with replay(synthetic(interaction)):
        return await collect(BedrockProvider(session).run(request))


async def test_usage_with_cache_tokens_service_tier_and_content_filter(session: aiohttp.ClientSession) -> None:
    reply = {"output": {"message": {"role": "assistant", "content": [{"text": "partial"}, {"citationsContent": {}}]}},
             "stopReason": "guardrail_intervened", "serviceTier": {"type": "priority"}, "metrics": {"latencyMs": 1},
             "usage": {"inputTokens": 2, "cacheReadInputTokens": 1322, "cacheWriteInputTokens": 10,
                       "outputTokens": 5, "totalTokens": 1339}}
    builder, events = build(await _run_synthetic(session, Interaction.make(URL, body=reply)))
    resource = builder.resource
    assert usage_tuple(resource) == (1334, 1322, 5, 0, 1339)
    assert (resource.status, resource.service_tier) == ("incomplete", "priority")
    assert resource.incomplete_details is not None and resource.incomplete_details.reason == "content_filter"
    validate_stream([to_json(event) for event in events])


@pytest.mark.parametrize("url", [URL, STREAM_URL], ids=["whole", "stream"])
async def test_malformed_model_output_fails_the_turn(session: aiohttp.ClientSession, url: str) -> None:
    if url == URL:
        body = _encode({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
                        "stopReason": "malformed_tool_use", "usage": {}})
        headers = {"Content-Type": "application/json"}
    else:
        body = (frame("messageStart", {"role": "assistant"})
                + frame("messageStop", {"stopReason": "malformed_model_output"}))
        headers = EVENTSTREAM
    with pytest.raises(UpstreamError, match="malformed") as caught:
        await _run_synthetic(session, Interaction.make(url, body=body, headers=headers))
    assert caught.value.retryable


async def test_redacted_reasoning_in_a_stream(session: aiohttp.ClientSession) -> None:
    body = b"".join([
        frame("messageStart", {"role": "assistant"}),
        *(frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"redactedContent": part}}})
          for part in ("c2Vj", "cmV0")),
        frame("contentBlockStop", {"contentBlockIndex": 0}),
        frame("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
        frame("messageStop", {"stopReason": "end_turn"}),
        frame("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}})])
    builder, _ = build(await _run_synthetic(session, Interaction.make(STREAM_URL, body=body, headers=EVENTSTREAM)))
    assert _summary(builder.resource) == [thought(), text("Hi")]
    reasoning = builder.resource.output[0]
    assert isinstance(reasoning, Reasoning) and reasoning.encrypted_content == '{"redactedContent":"c2VjcmV0"}'


def _exception(kind: str, message: str) -> bytes:
    return encode_message({":exception-type": kind, ":content-type": "application/json",
                           ":message-type": "exception"}, _encode({"message": message}))


@pytest.mark.parametrize(("kind", "error", "status", "code"), [
    ("throttlingException", RateLimited, 429, "rate_limit_exceeded"),
    ("modelStreamErrorException", UpstreamError, 502, "model_error"),
    ("validationException", InvalidRequest, 400, "invalid_request"),
    ("internalServerException", UpstreamError, 502, "upstream_error"),
    ("serviceUnavailableException", UpstreamUnavailable, 503, "upstream_unavailable"),
])
async def test_exception_frames_after_the_stream_started(session: aiohttp.ClientSession, kind: str,
                                                         error: type[GatewayError], status: int, code: str) -> None:
    body = (frame("messageStart", {"role": "assistant"})
            + frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "partial"}})
            + _exception(kind, f"{kind} says stop"))
    request = _upstream({"model": "team-model", "input": "x", "stream": True}, _deployment(credentials={}))
    seen: list[Delta] = []
    with replay(synthetic(Interaction.make(STREAM_URL, body=body, headers=EVENTSTREAM))), \
            pytest.raises(GatewayError) as caught:
        async for delta in BedrockProvider(session).run(request):
            seen.append(delta)
    assert any(getattr(delta, "text", None) == "partial" for delta in seen)
    assert (type(caught.value), caught.value.status, caught.value.code) == (error, status, code)
    assert caught.value.message == f"{kind} says stop"


async def test_stream_that_ends_without_message_stop_fails(session: aiohttp.ClientSession) -> None:
    body = frame("messageStart", {"role": "assistant"}) + frame("contentBlockDelta", {
        "contentBlockIndex": 0, "delta": {"text": "cut"}})
    with pytest.raises(UpstreamError, match="stream ended early"):
        await _run_synthetic(session, Interaction.make(STREAM_URL, body=body[:-3], headers=EVENTSTREAM))


@pytest.mark.parametrize(("error_type", "status", "error", "mapped", "code", "retryable"), [
    ("ThrottlingException", 429, RateLimited, 429, "rate_limit_exceeded", True),
    ("ServiceQuotaExceededException", 400, RateLimited, 429, "insufficient_quota", False),
    ("AccessDeniedException", 403, UpstreamError, 502, "upstream_auth_failed", False),
    ("UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/", 403, UpstreamError,
     502, "upstream_auth_failed", False),
    ("ResourceNotFoundException", 404, InvalidRequest, 400, "model_not_found", False),
    ("ModelTimeoutException", 408, UpstreamTimeout, 504, "upstream_timeout", True),
    ("ModelErrorException", 424, UpstreamError, 502, "model_error", True),
    ("ModelNotReadyException", 429, UpstreamUnavailable, 503, "upstream_unavailable", True),
    ("ServiceUnavailableException", 503, UpstreamUnavailable, 503, "upstream_unavailable", True),
    ("InternalServerException", 500, UpstreamError, 502, "upstream_error", True),
    ("ValidationException", 400, InvalidRequest, 400, "invalid_request", False),
])
async def test_error_types(session: aiohttp.ClientSession, error_type: str, status: int,
                           error: type[GatewayError], mapped: int, code: str, retryable: bool) -> None:
    interaction = Interaction.make(URL, status=status, body={"message": f"{error_type.split(':')[0]} happened"},
                                   headers={"x-amzn-ErrorType": error_type, "Content-Type": "application/json"})
    with pytest.raises(GatewayError) as caught:
        await _run_synthetic(session, interaction)
    assert (type(caught.value), caught.value.status, caught.value.code, caught.value.retryable) == (
        error, mapped, code, retryable)
    assert caught.value.message.endswith("happened")


async def test_context_too_long_and_type_in_the_body(session: aiohttp.ClientSession) -> None:
    too_long = Interaction.make(URL, status=400, body={"message": "Input is too long for requested model."})
    with pytest.raises(ContextTooLong):
        await _run_synthetic(session, too_long)
    typed = Interaction.make(URL, status=400, body={"__type": "com.amazon.bedrock#ThrottlingException",
                                                    "Message": "slow down"})
    with pytest.raises(RateLimited, match="slow down"):
        await _run_synthetic(session, typed)


# -- the simulator dialect ---------------------------------------------------------------------
def test_simulator_frames_parse_with_botocore() -> None:
    frames = [frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "é"}}),
              _exception("throttlingException", "slow")]
    parsed = EventStreamBuffer()
    parsed.add_data(b"".join(frames))
    event, exception = list(parsed)
    assert event.headers == {":event-type": "contentBlockDelta", ":content-type": "application/json",
                             ":message-type": "event"}
    payload = json.loads(event.payload)
    assert payload["delta"] == {"text": "é"} and re.fullmatch(r"[a-zA-Z0-9]+", payload["p"])
    assert exception.headers[":message-type"] == "exception" and json.loads(exception.payload) == {"message": "slow"}
    assert SIM_BEDROCK.error_body(429) == b'{"message":"Too many requests, please wait before trying again."}'


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    running = await start_simulator()
    try:
        yield running.url
    finally:
        await running.close()


@pytest.mark.parametrize("stream", [False, True], ids=["converse", "converse-stream"])
async def test_signed_round_trip_through_the_simulator(session: aiohttp.ClientSession, simulator: str,
                                                       stream: bool) -> None:
    deployment = _deployment(simulator, "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.model-v1:0",
                             headers={"x-sim-parallel": "2"})
    first = _upstream({"model": "team-model", "input": "Weather in Oslo and Rome", "stream": stream,
                       "tools": [WEATHER, TOP_SONG]}, deployment)
    calls = _summary(build(await collect(BedrockProvider(session).run(first)))[0].resource)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Rome"}),
                                                                       ("top_song", {"sign": "Rome"})]
    follow = _upstream({"model": "team-model", "stream": stream, "tools": [WEATHER, TOP_SONG], "input": [
        user("Weather in Oslo and Rome"), *[fc(c["call_id"], c["name"], c["arguments"]) for c in calls],
        *[fco(c["call_id"], c["name"]) for c in calls]]}, deployment)
    builder, _ = build(await collect(BedrockProvider(session).run(follow)))
    assert _summary(builder.resource) == [text("Tool said: get_weather; top_song")]
    async with session.get(f"{simulator}/_sim/requests") as reply:
        recorded = await reply.json()
    suffix = "converse-stream" if stream else "converse"
    assert [r["path"] for r in recorded] == [f"/model/{deployment.model}/{suffix}"] * 2
    assert all(r["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
               for r in recorded)


async def test_corrupt_frame_from_the_simulator_is_an_upstream_error(session: aiohttp.ClientSession,
                                                                     simulator: str) -> None:
    request = _upstream({"model": "team-model", "input": "hi", "stream": True},
                        _deployment(simulator, "m", credentials={}, headers={"x-sim-fault": "malformed"}))
    with pytest.raises(UpstreamError, match="corrupt event stream frame"):
        await collect(BedrockProvider(session).run(request))


@pytest.mark.parametrize(("body", "words"), [
    ({"messages": [{"role": "assistant", "content": [{"text": "a"}]}]}, "start with a user message"),
    ({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]},
     "alternate"),
    ({"messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": []}}]}]}, "toolConfig"),
    ({"messages": [{"role": "user", "content": [{"text": " "}]}]}, "messages.0.content.0 is blank"),
    ({"messages": [{"role": "user", "content": [{"text": "a"}]}],
      "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": {}}}}}},
     "schema"),
], ids=["first-assistant", "not-alternating", "no-tool-config", "blank", "schema-not-a-string"])
async def test_simulator_refuses_what_bedrock_refuses(session: aiohttp.ClientSession, simulator: str,
                                                      body: dict[str, Any], words: str) -> None:
    async with session.post(f"{simulator}/model/m/converse", json=body) as reply:
        assert reply.status == 400
        assert words in (await reply.json())["message"]
