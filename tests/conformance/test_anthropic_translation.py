"""Anthropic Messages dialect (``providers.anthropic``) against recorded traffic.

Every interaction of every cassette in ``anthropic/`` is either a ``Case`` below or listed in
``SKIPPED`` with its reason (``test_every_recorded_interaction_is_accounted_for`` enforces that).
A case is the Responses request a client would send for what the recording's client sent, and
goes the way the engine takes it: through ``proxy.adaptation.adapt`` (which unseals reasoning
state) into the adapter, and the adapter's deltas back through ``Adapted.replies`` (which seals
it). For each case:

1. ``prepare()`` must produce the recorded request body, except for the keys the case ignores;
   each ``Ignore`` names a path and (usually) the exact value, says why, and must match something;
2. ``run()`` replays the interaction: the body and URL sent must be the prepared ones, the key
   the deployment's (``x-api-key``), and the version and beta headers the recorded ones;
3. the deltas go through ``ResponseBuilder``; every event and the final resource must satisfy
   the spec's schemas, and the normalised output (items, call ids, arguments, reasoning, usage,
   status, incomplete reason, service tier, upstream model) must equal the recording's; error
   recordings must map to the expected ``GatewayError`` whose message carries no credential.

A case with ``after`` continues another: its request is built from the output the earlier case
produced (sealed reasoning included), so second turns check the round trip itself, e.g. that a
thinking block comes back byte-identical to what Anthropic sent. Expected values were read from
the recorded replies by hand (long texts as prefix, suffix and length). The tests after the cases
cover what no recording shows, with a synthetic recording, ``prepare`` alone or the simulator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import msgspec
import pytest

from providers.anthropic import AnthropicProvider
from providers.anthropic_stream import AnthropicStreamDecoder
from providers.simulator import SimulatorOptions, start_simulator
from proxy.adaptation import Adapted, adapt
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    UnsupportedFeature,
    UpstreamError,
    UpstreamUnavailable,
)
from proxy.schema.content import InputFile, InputImage, InputVideo, Refusal
from proxy.schema.deltas import Delta, ReasoningState
from proxy.schema.items import (
    Compaction,
    FunctionCall,
    Item,
    ItemReference,
    Message,
    OpaqueItem,
    Reasoning,
)
from proxy.schema.request import FunctionTool
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, UpstreamRequest
from proxy.sealing import Sealer
from tests.conformance import _cases
from tests.conformance._cases import (
    API_KEY,
    BOOK_SCHEMA,
    Failure,
    Ignore,
    Long,
    Outcome,
    assert_accounted_for,
    assistant,
    build,
    call,
    case_params,
    check_case,
    collect,
    converted_request,
    fco,
    input_text,
    no_error,
    offline,
    play,
    recorded,
    recorded_ids,
    replayed,
    summary,
    text,
    usage_tuple,
    user,
    validate,
)
from tests.conformance.cassette import Interaction, Recording, load, replay, synthetic

FOLDER = "anthropic"
MESSAGES_PATH = "/messages"
TEAM = "team-a"
SEALER = Sealer(bytes(range(32)))
EPHEMERAL = {"type": "ephemeral"}


# -- the vocabulary of cases ---------------------------------------------------------------------
STREAM_FALSE = Ignore("stream", "pydantic-ai sends stream:false explicitly; the adapter leaves the default out",
                      False)
NULL_CACHE = Ignore("messages.*.content.*.cache_control", "the SDK serialises an unset cache_control as null",
                    None)
CACHED_MESSAGE = Ignore("messages.*.content.*.cache_control", "Mirascope marks the last block as a prompt-cache "
                        "breakpoint; Responses has no cache breakpoints", EPHEMERAL)
CACHED_SYSTEM = Ignore("system.*.cache_control", "Mirascope marks the system prompt as a prompt-cache breakpoint",
                       EPHEMERAL)
CACHED_TOOLS = Ignore("tools.*.cache_control", "Mirascope marks the tools as a prompt-cache breakpoint", EPHEMERAL)
NULL_CITATIONS = Ignore("messages.*.content.*.citations", "Mirascope copies the reply's citations:null into the "
                        "history; it is not a request field", None)
NOT_AN_ERROR = Ignore("messages.*.content.*.is_error", "pydantic-ai marks successful tool results; false is the "
                      "default", False)
TOP_K = Ignore("top_k", "top_k is not a Responses parameter", 50)
STOP_SEQUENCES = Ignore("stop_sequences", "stop is not a Responses parameter", ["4242"])


def thought(summary: Any = None) -> dict[str, Any]:
    """A reasoning item with sealed state; ``summary`` is the thinking text (none when redacted)."""
    return {"type": "reasoning", "summary": [] if summary is None else [summary], "sealed": True}


@dataclass(frozen=True)
class Case(_cases.Case):
    """``request`` may be a function of the output items of ``after``, the case whose output
    this one's request continues."""

    after: str | None = None


def call_ids(prior: list[dict[str, Any]]) -> list[str]:
    return [item["call_id"] for item in prior if item["type"] == "function_call"]


# -- tools, schemas and prompts seen in the recordings ---------------------------------------
SONNET_4 = "claude-sonnet-4-20250514"
SONNET_45 = "claude-sonnet-4-5-20250929"
HAIKU_45 = "claude-haiku-4-5-20251001"
MIRASCOPE = {"max_tokens": "16000"}  # the SDK's default output limit, catalogue data here
ADDITION = "What is 4200 + 42?"
WEATHER_PROMPT = "What's the weather in Paris?"
SECRETS_PROMPT = "Please retrieve the secrets associated with each of these passwords: mellon,radiance"
PRIMES_PROMPT = ("How many primes below 400 contain 79 as a substring? Answer ONLY with the number, not sharing "
                 "which primes they are.")
PRIMES_FOLLOW_UP = "If you remember what the primes were, then share them, or say 'I don't remember.'"
CITY_PROMPT = "What is the largest city in the user country?"
PELICAN_PROMPT = "Two names for a pet pelican"
BOOK_TOOL = "__mirascope_formatted_output_tool__"


def weather_tool(description: str, closed: bool = False) -> dict[str, Any]:
    parameters: dict[str, Any] = {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}
    if closed:
        parameters["additionalProperties"] = False
    return {"type": "function", "name": "get_weather", "description": description, "parameters": parameters}


TIME_TOOL = {"type": "function", "name": "get_time", "description": "Get time in a timezone",
             "parameters": {"properties": {"timezone": {"type": "string"}}, "required": ["timezone"],
                            "type": "object"}}
SECRET_TOOL = {"type": "function", "name": "secret_retrieval_tool",
               "description": "A tool that requires a password to retrieve a secret.",
               "parameters": {"properties": {"password": {"title": "Password", "type": "string"}},
                              "required": ["password"], "additionalProperties": False, "type": "object"}}
PELICAN_TOOL = {"type": "function", "name": "pelican_name_generator", "description": "",
                "parameters": {"properties": {}, "type": "object"}}
COUNTRY_TOOL = {"type": "function", "name": "get_user_country", "description": "",
                "parameters": {"additionalProperties": False, "properties": {}, "type": "object"}}
MELLON, RADIANCE = '{"password":"mellon"}', '{"password":"radiance"}'


def secrets(stream: bool) -> dict[str, Any]:
    return {"model": "team-model", "instructions": "Use parallel tool calling.", "input": SECRETS_PROMPT,
            "tools": [SECRET_TOOL], "stream": stream}


def secrets_results(stream: bool) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    def build(prior: list[dict[str, Any]]) -> dict[str, Any]:
        first, second = call_ids(prior)
        return secrets(stream) | {"input": [user(SECRETS_PROMPT), *prior, fco(first, "Welcome to Moria!"),
                                            fco(second, "Life before Death")]}
    return build


def primes(effort: str, stream: bool) -> dict[str, Any]:
    return {"model": "team-model", "input": PRIMES_PROMPT, "reasoning": {"effort": effort}, "stream": stream}


def primes_follow_up(stream: bool) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    def build(prior: list[dict[str, Any]]) -> dict[str, Any]:
        return primes("minimal", stream) | {"input": [user(PRIMES_PROMPT), *prior,
                                                      user([input_text(PRIMES_FOLLOW_UP)])]}
    return build


def pelican_results(prior: list[dict[str, Any]]) -> dict[str, Any]:
    first, second = call_ids(prior)
    # llm-anthropic adds a blank text block before the calls it replays.
    return {"model": "team-model", "temperature": 1.0, "tools": [PELICAN_TOOL], "stream": True, "input": [
        user([input_text(PELICAN_PROMPT)]), assistant([{"type": "output_text", "text": " "}]), *prior,
        fco(first, "Charles"), fco(second, "Sammy")]}


def country_result(prior: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "team-model", "reasoning": {"effort": "high"}, "tool_choice": "auto", "tools": [COUNTRY_TOOL],
            "input": [user([input_text(CITY_PROMPT)]), *prior, fco(call_ids(prior)[0], "Mexico")]}


CASES: list[Case] = [
    # ---------------------------------------------------------------- plain text
    Case("text-nonstream", "anthropic/text-nonstream.yaml", 0, {"model": "team-model", "input": ADDITION},
         Outcome([text("4200 + 42 = 4242")], (17, 0, 15, 0, 32), SONNET_4), options=MIRASCOPE),
    Case("text-stream", "anthropic/text-stream.yaml", 0, {"model": "team-model", "input": ADDITION, "stream": True},
         Outcome([text("4200 + 42 = 4242")], (17, 0, 15, 0, 32), SONNET_4), options=MIRASCOPE),
    Case("stop-reason-max-tokens", "anthropic/stop-reason-max-tokens.yaml", 0,
         {"model": "team-model", "input": "List all U.S. states.", "max_output_tokens": 50},
         Outcome([text("Here are all 50 U.S. states in alphabetical order:\n\n1. Alabama\n2. Alaska\n3. Arizona\n"
                       "4. Arkansas\n5. California\n6. Colorado\n7. Connecticut\n8. Delaware\n9")],
                 (15, 0, 50, 0, 65), SONNET_4, incomplete="max_output_tokens")),
    Case("sampling-params-stop-sequence", "anthropic/sampling-params-stop-sequence.yaml", 0,
         {"model": "team-model", "input": ADDITION, "max_output_tokens": 500, "temperature": 0.7, "top_p": 0.3,
          "reasoning": {"effort": "none"}},
         Outcome([text("4200 + 42 = ")], (17, 0, 12, 0, 29), SONNET_4), normalise=(TOP_K, STOP_SEQUENCES)),
    Case("multi-turn-history", "anthropic/multi-turn-history.yaml", 1,
         {"model": "team-model", "input": [
             user("Who created you?"), assistant("I am a large language model, trained by Google."),
             user([input_text("Can you double-check that?")])]},
         Outcome([text("You're absolutely right - I apologize for the error. I am Claude, and I was created by "
                       "Anthropic, not Google. Thank you for prompting me to double-check that basic fact about "
                       "myself.")], (35, 0, 47, 0, 82), SONNET_4),
         normalise=(CACHED_MESSAGE,), options=MIRASCOPE),
    # ---------------------------------------------------------------- input parts
    Case("input-image-url", "anthropic/input-image-url.yaml", 0,
         {"model": "team-model", "input": [user([
             input_text("Describe the following image in one sentence"),
             {"type": "input_image", "image_url": "https://en.wikipedia.org/static/images/icons/wikipedia.png"}])]},
         Outcome([text("This is the iconic Wikipedia logo, featuring a spherical puzzle globe made up of "
                       "interlocking jigsaw puzzle pieces with text in various languages and writing systems.")],
                 (34, 0, 36, 0, 70), SONNET_4),
         normalise=(NULL_CACHE,), options=MIRASCOPE),
    Case("input-document-base64", "anthropic/input-document-base64.yaml", 0,
         lambda _: {"model": "team-model", "input": [user([
             input_text("What text is in this PDF document? Reply in one short sentence."),
             {"type": "input_file", "filename": "document.pdf", "file_data": "data:application/pdf;base64," + recorded(
                 "anthropic/input-document-base64.yaml", 0, "messages", 0, "content", 1, "source", "data")}])]},
         Outcome([text('The PDF document contains the text "Hello, world!"')], (1598, 0, 14, 0, 1612), SONNET_4),
         normalise=(NULL_CACHE,), options=MIRASCOPE),
    Case("input-document-url", "anthropic/input-document-url.yaml", 0,
         {"model": "team-model", "input": [user([
             input_text("What is this PDF about? Reply in one short sentence."),
             {"type": "input_file",
              "file_url": "https://www.w3.org/WAI/ER/tests/xhtml/testfiles/resources/pdf/dummy.pdf"}])]},
         Outcome([text("This is a dummy or placeholder PDF file with no actual content.")], (1617, 0, 16, 0, 1633),
                 SONNET_4),
         normalise=(NULL_CACHE,), options=MIRASCOPE),
    # ---------------------------------------------------------------- structured output
    Case("json-schema-output-format", "anthropic/json-schema-output-format.yaml", 0,
         {"model": "team-model", "input": "Please recommend the most popular book by Patrick Rothfuss",
          "text": {"format": {"type": "json_schema", "name": "Book", "strict": True, "schema": BOOK_SCHEMA}}},
         Outcome([text('{"title": "THE NAME OF THE WIND", "author": {"first_name": "Patrick", "last_name": '
                       '"Rothfuss"}, "rating": 7}')], (414, 0, 43, 0, 457), SONNET_45),
         options=MIRASCOPE),
    Case("json-via-forced-tool", "anthropic/json-via-forced-tool.yaml", 0,
         lambda _: {"model": "team-model", "input": "Please recommend the most popular book by Patrick Rothfuss",
                    "instructions": f"Always respond to the user's query using the {BOOK_TOOL} tool for structured "
                                    "output.",
                    "tools": [{"type": "function", "name": BOOK_TOOL,
                               "description": "Use this tool to extract data in Book format for a final response.\n"
                                              "A book with a rating. The title should be in all caps!",
                               "parameters": recorded("anthropic/json-via-forced-tool.yaml", 0, "tools", 0,
                                                      "input_schema")}],
                    "tool_choice": {"type": "function", "name": BOOK_TOOL}, "parallel_tool_calls": False},
         Outcome([call("toolu_01SRRKcJZJptNQNGTgQiMmJt", BOOK_TOOL,
                       '{"title":"THE NAME OF THE WIND","author":{"first_name":"Patrick","last_name":"Rothfuss"},'
                       '"rating":7}')], (563, 0, 81, 0, 644), SONNET_4),
         normalise=(CACHED_SYSTEM, CACHED_TOOLS), options=MIRASCOPE),
    # ---------------------------------------------------------------- tool choice
    Case("tool-choice-any", "anthropic/tool-choice-any.yaml", 0,
         {"model": "team-model", "input": [user([input_text(WEATHER_PROMPT)])], "tool_choice": "required",
          "tools": [weather_tool("Get weather for a city")]},
         Outcome([call("toolu_01Dxp8hdnkA8bsrVJJ8LB9q1", "get_weather", '{"city":"Paris"}')], (655, 0, 38, 0, 693),
                 SONNET_45),
         normalise=(STREAM_FALSE,)),
    Case("tool-choice-none", "anthropic/tool-choice-none.yaml", 0,
         {"model": "team-model", "input": [user([input_text("Say hello")])], "tool_choice": "none",
          "tools": [weather_tool("Get the current weather for a city.", closed=True)]},
         Outcome([text("Hello! 👋 How can I help you today?")], (567, 0, 16, 0, 583), SONNET_45),
         normalise=(STREAM_FALSE,)),
    Case("tool-choice-specific", "anthropic/tool-choice-specific.yaml", 0,
         {"model": "team-model", "input": [user([input_text(WEATHER_PROMPT)])],
          "tool_choice": {"type": "function", "name": "get_weather"},
          "tools": [weather_tool("Get weather for a city"), TIME_TOOL]},
         Outcome([call("toolu_01J5u9yypnwo1Sqf4Fx9uMNG", "get_weather", '{"city":"Paris"}')], (713, 0, 33, 0, 746),
                 SONNET_45),
         normalise=(STREAM_FALSE,)),
    # ---------------------------------------------------------------- tool round trips
    Case("tools-parallel-call", "anthropic/tools-parallel-roundtrip.yaml", 0, secrets(False),
         Outcome([text("I'll retrieve the secrets for both passwords you provided."),
                  call("toolu_01BUvqBj8Yb34pNAbCJJY1oc", "secret_retrieval_tool", MELLON),
                  call("toolu_01VPuQJ1LonDBYXrr8pqPkqQ", "secret_retrieval_tool", RADIANCE)],
                 (416, 0, 109, 0, 525), SONNET_4),
         normalise=(CACHED_SYSTEM, CACHED_TOOLS), options=MIRASCOPE),
    Case("tools-parallel-results", "anthropic/tools-parallel-roundtrip.yaml", 1, secrets_results(False),
         Outcome([text('Here are the secrets retrieved for each password:\n\n- Password "mellon": **Welcome to '
                       'Moria!**\n- Password "radiance": **Life before Death**')], (602, 0, 39, 0, 641), SONNET_4),
         normalise=(CACHED_SYSTEM, CACHED_TOOLS, NULL_CITATIONS, NULL_CACHE, CACHED_MESSAGE), options=MIRASCOPE,
         after="tools-parallel-call"),
    Case("tools-parallel-call-stream", "anthropic/tools-parallel-roundtrip-stream.yaml", 0, secrets(True),
         Outcome([text("I'll retrieve the secrets for both passwords you provided."),
                  call("toolu_015cUijgET79LXjgeYQerN2h", "secret_retrieval_tool", '{"password": "mellon"}'),
                  call("toolu_01XZTimPexA7h3EVKesnKt5T", "secret_retrieval_tool", '{"password": "radiance"}')],
                 (416, 0, 109, 0, 525), SONNET_4),
         normalise=(CACHED_SYSTEM, CACHED_TOOLS), options=MIRASCOPE),
    Case("tools-parallel-results-stream", "anthropic/tools-parallel-roundtrip-stream.yaml", 1, secrets_results(True),
         Outcome([text(Long("Here are the secrets retrieved for each password:\n",
                            'h"\n\nBoth secrets have been successfully retrieved!', 192))],
                 (602, 0, 52, 0, 654), SONNET_4),
         normalise=(CACHED_SYSTEM, CACHED_TOOLS, NULL_CACHE, CACHED_MESSAGE), options=MIRASCOPE,
         after="tools-parallel-call-stream"),
    Case("tools-llm-plugin-calls", "anthropic/tools-llm-plugin.yaml", 0,
         {"model": "team-model", "input": [user([input_text(PELICAN_PROMPT)])], "temperature": 1.0,
          "tools": [PELICAN_TOOL], "stream": True},
         Outcome([call("toolu_01LtHJmixrs9NcWQkK8hu8hj", "pelican_name_generator", "{}"),
                  call("toolu_01N8a4jWyf116qKTMqKKmjyt", "pelican_name_generator", "{}")],
                 (542, 0, 62, 0, 604), HAIKU_45),
         options={"max_tokens": "8192"}),
    Case("tools-llm-plugin-results", "anthropic/tools-llm-plugin.yaml", 1, pelican_results,
         Outcome([text(Long("Here are two great names for your pet pelican:\n\n1.",
                            "ake an excellent name for your feathered friend! 🦅", 299))],
                 (678, 0, 82, 0, 760), HAIKU_45),
         options={"max_tokens": "8192"}, after="tools-llm-plugin-calls"),
    # ---------------------------------------------------------------- thinking
    Case("thinking-with-tools-call", "anthropic/thinking-with-tools.yaml", 0,
         {"model": "team-model", "input": [user([input_text(CITY_PROMPT)])], "reasoning": {"effort": "high"},
          "tool_choice": "auto", "tools": [COUNTRY_TOOL]},
         Outcome([thought(Long('The user is asking about the largest city in "the ',
                               "\n\nLet me call the get_user_country function first.", 376)),
                  text("I'll help you find the largest city in your country. First, let me determine which "
                       "country you're from."),
                  call("toolu_01YGzqpRE16Vricda3Aqcejo", "get_user_country", "{}")],
                 (398, 0, 155, 0, 553), SONNET_4),
         normalise=(STREAM_FALSE,), options={"thinking_budget_high": "3000"}),
    Case("thinking-with-tools-result", "anthropic/thinking-with-tools.yaml", 1, country_result,
         Outcome([text(Long("Based on the information that you're from Mexico, ",
                            "olitical, economic, and cultural center of Mexico.", 604))],
                 (566, 0, 126, 0, 692), SONNET_4),
         normalise=(STREAM_FALSE, NOT_AN_ERROR), options={"thinking_budget_high": "3000"},
         after="thinking-with-tools-call"),
    Case("thinking-signature", "anthropic/thinking-signature-replay.yaml", 0, primes("medium", False),
         Outcome([thought(Long('I need to find all primes below 400 that contain "',
                               " substring is 79, 179, and 379—three primes total.", 1893)), text("3")],
                 (67, 0, 964, 0, 1031), SONNET_4),
         options=MIRASCOPE),
    Case("thinking-signature-replayed", "anthropic/thinking-signature-replay.yaml", 1, primes_follow_up(False),
         Outcome([thought(Long("I need to think about primes below 400 that contai",
                               "That's 3 primes, which matches my previous answer.", 841)),
                  text("The primes were: 79, 179, and 379.")], (97, 0, 391, 0, 488), SONNET_4),
         normalise=(NULL_CITATIONS, CACHED_MESSAGE), options=MIRASCOPE, after="thinking-signature"),
    Case("thinking-stream", "anthropic/thinking-stream.yaml", 0, primes("medium", True),
         Outcome([thought(Long("I need to find all prime numbers below 400 that co",
                               'ining "79" is 79, 179, and 379—three primes total.', 1883)),
                  text(Long('Looking at numbers below 400 that contain "79" as ',
                            "\n- 279: Not prime (divisible by 3)\n- 379: Prime\n\n3", 194))],
                 (67, 0, 1193, 0, 1260), SONNET_4),
         options=MIRASCOPE),
    Case("thinking-stream-replayed", "anthropic/thinking-stream.yaml", 1, primes_follow_up(True),
         Outcome([thought(Long("The user is asking me to recall the primes I found",
                               "- 379: Prime\n\nSo the primes were 79, 179, and 379.", 245)),
                  text("The primes were: 79, 179, and 379.")], (171, 0, 107, 0, 278), SONNET_4),
         normalise=(CACHED_MESSAGE,), options=MIRASCOPE, after="thinking-stream"),
    Case("thinking-redacted-stream", "anthropic/thinking-redacted-stream.yaml", 0,
         {"model": "team-model", "input": [user([input_text(
             "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC"
             "2876CB")])], "reasoning": {"effort": "minimal"}, "stream": True},
         Outcome([thought(), thought(), text(Long("I notice that you've sent what appears to be some ",
                                                  "sist you today with a legitimate task or question?", 359))],
                 (92, 0, 189, 0, 281), SONNET_45)),
    # ---------------------------------------------------------------- errors
    Case("effort-unsupported", "anthropic/error-400-invalid-request.yaml", 0,
         {"model": "team-model", "input": [user([input_text("What is 2+2?")])], "reasoning": {"effort": "xhigh"}},
         Failure(InvalidRequest, 400, "invalid_request", "does not support effort level 'xhigh'"),
         normalise=(STREAM_FALSE,), options={"reasoning": "effort"}),
    Case("invalid-key", "anthropic/error-401-invalid-key.yaml", 0,
         {"model": "team-model", "input": "This should fail with AuthenticationError"},
         Failure(UpstreamError, 502, "upstream_auth_failed", "invalid x-api-key"), options=MIRASCOPE),
    Case("model-not-found", "anthropic/error-404-model-not-found.yaml", 0,
         {"model": "team-model", "input": "This should fail with NotFoundError"},
         Failure(InvalidRequest, 400, "model_not_found", "model: this-model-does-not-exist-12345", param="model"),
         options=MIRASCOPE),
]

# Interactions not replayed as cases, with the reason. Each becomes a skipped test so the report
# lists it; test_every_recorded_interaction_is_accounted_for keeps this list complete.
SKIPPED: dict[tuple[str, int], str] = {
    ("anthropic/error-404-model-not-found.yaml", 1): "client retry: same request and reply as #0",
    ("anthropic/multi-turn-history.yaml", 0): "a Gemini call (generativelanguage.googleapis.com) that produced the "
                                              "history of #1; another dialect's traffic",
}


# -- helpers -----------------------------------------------------------------------------------
def _deployment(base_url: str = "https://api.anthropic.com/v1", model: str = "claude-test",
                **overrides: Any) -> Deployment:
    return Deployment(name="test", provider="anthropic-test", dialect="anthropic", base_url=base_url, model=model,
                      api_key=API_KEY, auth="x-api-key", **overrides)


def _upstream(responses_body: dict[str, Any], deployment: Deployment) -> tuple[UpstreamRequest, Adapted]:
    """What the engine hands the adapter for this Responses request (no stored history), and the
    adaptation (reasoning state unsealed on the way in, sealed on the way out)."""
    request = converted_request(responses_body, deployment)
    adapted = adapt(request.items, request.tools, request.tool_choice, dialect="anthropic", team=TEAM,
                    sealer=SEALER)
    request.items, request.tools, request.tool_choice = adapted.items, adapted.tools, adapted.tool_choice
    return request, adapted


def _reasoning(item: Reasoning) -> dict[str, Any]:
    assert not item.content, "thinking is reported as the summary, not as raw content"
    sealed = isinstance(item.encrypted_content, str) and Sealer.is_sealed(item.encrypted_content)
    return {"type": "reasoning", "summary": [p.text for p in item.summary], "sealed": sealed}


def _summary(resource: ResponseResource) -> list[dict[str, Any]]:
    return summary(resource, reasoning=_reasoning)


def _recorded_header(interaction: Interaction, name: str) -> str | None:
    values = next((v for k, v in interaction.request_headers.items() if k.lower() == name), None)
    return values[0] if values else None


def _case(case_id: str) -> Case:
    return next(case for case in CASES if case.id == case_id)


async def _case_request(case: Case, session: aiohttp.ClientSession
                        ) -> tuple[Recording, UpstreamRequest, Adapted]:
    """The recording of one case, and the request (and its adaptation) the engine would make."""
    recording = load(case.cassette, interactions=[case.interaction])
    interaction = recording.interactions[0]
    prior = await _prior_output(case.after, session) if case.after else []
    split = urlsplit(interaction.uri)
    deployment = _deployment(f"{split.scheme}://{split.netloc}{split.path.removesuffix(MESSAGES_PATH)}",
                             recording.recorded_requests[0]["model"], options=case.options,
                             query=dict(parse_qsl(split.query)))
    request, adapted = _upstream(case.body(prior), deployment)
    return recording, request, adapted


async def _prior_output(case_id: str, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """The output items an earlier case produced, as a client would send them back."""
    recording, request, adapted = await _case_request(_case(case_id), session)
    _, deltas = await play(recording, adapted.replies(AnthropicProvider(session).run(request)))
    assert isinstance(deltas, list), deltas
    builder, _ = build(deltas)
    return [msgspec.to_builtins(item) for item in builder.resource.output]


# -- the recorded cases ------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CASES, SKIPPED))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording, request, adapted = await _case_request(case, session)
    interaction = recording.interactions[0]
    assert interaction.path.endswith(MESSAGES_PATH)
    provider = AnthropicProvider(session)
    await check_case(case, recording, provider.prepare(request), adapted.replies(provider.run(request)), headers={
        "x-api-key": API_KEY, "Authorization": None,
        "anthropic-version": _recorded_header(interaction, "anthropic-version") or "2023-06-01",
        "anthropic-beta": _recorded_header(interaction, "anthropic-beta")},
        pieces=1 if request.stream else 0, summarise=_summary)


def test_every_recorded_interaction_is_accounted_for() -> None:
    assert_accounted_for(CASES, SKIPPED, recorded_ids(FOLDER))
    assert all(_case(case.after).cassette == case.cassette for case in CASES if case.after)


# -- round trips of reasoning state ----------------------------------------------------------
async def test_streamed_thinking_becomes_the_block_it_came_in(session: aiohttp.ClientSession) -> None:
    """Without the engine's seal, the state is the thinking block itself: the concatenated
    thinking and signature deltas, byte for byte."""
    recording = load("anthropic/thinking-stream.yaml", interactions=[0])
    request, _ = _upstream(primes("medium", True), _deployment(model="claude-sonnet-4-0", options=MIRASCOPE))
    with replay(recording):
        deltas = await collect(AnthropicProvider(session).run(request))
    states = [json.loads(delta.encrypted_content) for delta in deltas if isinstance(delta, ReasoningState)]
    replayed = load("anthropic/thinking-stream.yaml", interactions=[1]).recorded_requests[0]
    assert states == [replayed["messages"][1]["content"][0]]


async def test_redacted_thinking_goes_back_unchanged(session: aiohttp.ClientSession) -> None:
    case = _case("thinking-redacted-stream")
    prior = await _prior_output(case.id, session)
    assert isinstance(case.request, dict)
    follow_up = case.request | {"input": [*case.request["input"], *prior, user("And now?")]}
    request, _ = _upstream(follow_up, _deployment())
    body = AnthropicProvider(session).prepare(request).body
    stream = load(case.cassette).interactions[0].response_text()
    blocks = [json.loads(line[len("data: "):])["content_block"] for line in stream.splitlines()
              if line.startswith("data: ") and '"content_block_start"' in line]
    assert [block["type"] for block in blocks] == ["redacted_thinking", "redacted_thinking", "text"]
    assert body["messages"][1] == {"role": "assistant", "content": [
        *blocks[:2], {"type": "text", "text": prior[2]["content"][0]["text"]}]}
    assert body["messages"][2] == {"role": "user", "content": "And now?"}


# -- request translation without a recording ---------------------------------------------------
def _prepare(body: dict[str, Any], *, items: list[Item] | None = None, tools: list[Any] | None = None,
             tool_choice: Any = None, options: dict[str, str] | None = None) -> dict[str, Any]:
    return _prepared(body, items=items, tools=tools, tool_choice=tool_choice, options=options).body


def _prepared(body: dict[str, Any], *, items: list[Item] | None = None, tools: list[Any] | None = None,
              tool_choice: Any = None, stream: bool = False, options: dict[str, str] | None = None) -> Any:
    request, _ = _upstream({"model": "team-model", **body}, _deployment("https://example.test/v1", "m",
                                                                        options=options or {}))
    prepared = offline(AnthropicProvider, request, items=items, tools=tools, tool_choice=tool_choice, stream=stream)
    assert prepared.url == "https://example.test/v1/messages"
    return prepared


def _text_block(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def test_system_messages_are_hoisted_and_turns_merged() -> None:
    body = _prepare({"instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": "Answer in French."}, user("Hi"),
        {"type": "message", "role": "system", "content": [input_text("Late rule.")]}, user([input_text("Still me")]),
        assistant("A"), assistant([{"type": "output_text", "text": "B"}, {"type": "refusal", "refusal": "No."}]),
        user("Q")]})
    assert body["system"] == [_text_block("Be brief."), _text_block("Answer in French."), _text_block("Late rule.")]
    assert body["messages"] == [
        {"role": "user", "content": [_text_block("Hi"), _text_block("Still me")]},
        {"role": "assistant", "content": [_text_block("A"), _text_block("B"), _text_block("No.")]},
        {"role": "user", "content": "Q"}]
    assert body["max_tokens"] == 4096


def test_a_conversation_opened_by_the_assistant_gets_a_user_turn_first() -> None:
    body = _prepare({"input": [assistant(""), assistant([{"type": "output_text", "text": ""}]), assistant("Hello"),
                               user("x")]})
    assert "system" not in body
    assert body["messages"] == [{"role": "user", "content": "."}, {"role": "assistant", "content": "Hello"},
                                {"role": "user", "content": "x"}]


def test_tool_results_of_a_turn_form_one_user_message_ahead_of_its_text() -> None:
    """Empty text parts are left out too: Anthropic refuses empty text blocks."""
    pixel = "data:image/png;base64,iVBORw0KGgo="
    body = _prepare({"input": [
        user("q"), {"type": "function_call", "call_id": "c1", "name": "a", "arguments": ""},
        {"type": "function_call", "call_id": "call.2:x", "name": "b", "arguments": '{"x": [1]}'},
        user([input_text(""), input_text("by the way")]), fco("c1", "one"),
        fco("call.2:x", [input_text("two"), input_text(""), {"type": "input_image", "image_url": pixel}])]})
    assert body["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "a", "input": {}},
                                          {"type": "tool_use", "id": "call_2_x", "name": "b", "input": {"x": [1]}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
            {"type": "tool_result", "tool_use_id": "call_2_x", "content": [
                _text_block("two"),
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            _text_block("by the way")]}]


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"text"'])
def test_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _prepare({"input": [user("q"), {"type": "function_call", "call_id": "c1", "name": "a",
                                        "arguments": arguments}]})
    assert (caught.value.param, caught.value.status) == ("input[1].arguments", 400)


@pytest.mark.parametrize(("items", "param", "words"), [
    ([Message(role="user", content="hi"), OpaqueItem({"type": "web_search_call", "id": "ws_1"})],
     "input[1]", "'web_search_call'"),
    ([Compaction(encrypted_content="abc")], "input[0]", "'compaction'"),
    ([ItemReference(id="msg_1")], "input[0]", "'item_reference'"),
    ([Message(role="user", content=[InputImage(file_id="file_1")])], "input[0].content[0]", "file_id"),
    ([Message(role="user", content=[InputImage(image_url="ftp://example.test/a.png")])], "input[0].content[0]",
     "data: URLs"),
    ([Message(role="user", content=[InputFile(file_id="file_1")])], "input[0].content[0]", "file_id"),
    ([Message(role="user", content=[InputFile(file_data="data:text/csv;base64,YSxi")])], "input[0].content[0]",
     "PDF"),
    ([Message(role="user", content=[InputVideo(video_url="https://example.test/v.mp4")])], "input[0].content[0]",
     "input_video"),
    ([Message(role="user", content=[Refusal(refusal="no")])], "input[0].content[0]", "refusal"),
    ([Message(role="system", content=[InputImage(image_url="https://example.test/a.png")])],
     "input[0].content[0]", "system and developer messages"),
], ids=["opaque-item", "compaction", "item-reference", "image-file-id", "image-ftp", "file-id", "file-csv",
        "video", "user-refusal", "system-image"])
def test_what_anthropic_cannot_take_is_refused_with_its_position(items: list[Item], param: str,
                                                                 words: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, items=items)
    assert caught.value.param == param
    assert words in caught.value.message
    assert caught.value.status == 400


def test_reasoning_state_goes_back_in_place_and_foreign_reasoning_is_left_out() -> None:
    thinking = {"type": "thinking", "thinking": "Hm.", "signature": "c2ln"}
    body = _prepare({"input": "x"}, items=[
        Message(role="user", content="q"),
        Reasoning(summary=[], encrypted_content=json.dumps(thinking)),
        FunctionCall(call_id="c1", name="a", arguments="{}"),
        Reasoning(summary=[]),  # another provider's reasoning: the gateway dropped its state
        Message(role="assistant", content="Done.")])
    assert body["messages"][1] == {"role": "assistant", "content": [
        thinking, {"type": "tool_use", "id": "c1", "name": "a", "input": {}}, _text_block("Done.")]}


@pytest.mark.parametrize("state", ["not json", '{"type": "thinking", "thinking": "t"}', '{"type": "text"}', "[]"])
def test_reasoning_state_that_is_not_a_thinking_block_is_refused(state: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _prepare({"input": "x"}, items=[Message(role="user", content="q"),
                                        Reasoning(summary=[], encrypted_content=state)])
    assert caught.value.param == "input[1].encrypted_content"


def test_tool_definitions() -> None:
    tools = [{"type": "function", "name": "a", "parameters": {"properties": {"x": {"type": "string"}}}},
             {"type": "function", "name": "b", "description": "B", "strict": True},
             {"type": "function", "name": "c", "description": None, "strict": False}]
    request, _ = _upstream({"model": "team-model", "input": "x", "tools": tools}, _deployment())
    prepared = offline(AnthropicProvider, request)
    assert prepared.body["tools"] == [
        {"name": "a", "input_schema": {"properties": {"x": {"type": "string"}}, "type": "object"}},
        {"name": "b", "description": "B", "input_schema": {"type": "object"}, "strict": True},
        {"name": "c", "input_schema": {"type": "object"}}]
    assert "tool_choice" not in prepared.body
    assert prepared.headers["anthropic-beta"] == "structured-outputs-2025-11-13"
    first = request.tools[0]
    assert isinstance(first, FunctionTool)
    assert first.parameters == {"properties": {"x": {"type": "string"}}}, "the request's tool (echoed) was changed"
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", "tools": [{"type": "function", "name": "a", "parameters": {"type": "array"}}]})
    assert caught.value.param == "tools[0].parameters"
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[FunctionTool(name="a"), OpaqueItem({"type": "web_search"})])
    assert (caught.value.param, "'web_search'" in caught.value.message) == ("tools[1]", True)


TWO_TOOLS = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]


@pytest.mark.parametrize(("choice", "parallel", "tools", "expected"), [
    ("auto", None, ["a", "b"], {"type": "auto"}),
    ("none", None, ["a", "b"], {"type": "none"}),
    ("required", None, ["a", "b"], {"type": "any"}),
    ({"type": "function", "name": "b"}, None, ["a", "b"], {"type": "tool", "name": "b"}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}, None, ["b"],
     {"type": "tool", "name": "b"}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"},
                                                              {"type": "function", "name": "b"}]}, None, ["a", "b"],
     {"type": "any"}),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "a"}]}, None, ["a"],
     {"type": "auto"}),
    (None, False, ["a", "b"], {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, ["a", "b"], {"type": "any", "disable_parallel_tool_use": True}),
    ("none", False, ["a", "b"], {"type": "none"}),
    (None, True, ["a", "b"], None),
], ids=["auto", "none", "required", "function", "allowed-one-required", "allowed-two-required", "allowed-auto",
        "serial", "serial-required", "serial-none", "parallel-default"])
def test_tool_choice(choice: Any, parallel: bool | None, tools: list[str], expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"input": "x", "tools": TWO_TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    prepared = _prepare(body)
    assert [tool["name"] for tool in prepared["tools"]] == tools
    assert prepared.get("tool_choice") == expected


def test_tool_choice_without_tools() -> None:
    assert "tool_choice" not in _prepare({"input": "x", "tool_choice": "auto", "parallel_tool_calls": False})
    with pytest.raises(InvalidRequest, match="offers no tool") as caught:
        _prepare({"input": "x", "tool_choice": "required"})
    assert caught.value.param == "tool_choice"
    with pytest.raises(UnsupportedFeature) as unsupported:
        _prepare({"input": "x", "tools": TWO_TOOLS}, tool_choice=OpaqueItem({"type": "file_search"}))
    assert unsupported.value.param == "tool_choice"


@pytest.mark.parametrize(("effort", "max_output_tokens", "options", "thinking", "output_config"), [
    ("minimal", None, {}, {"type": "enabled", "budget_tokens": 1024}, None),
    ("low", None, {}, {"type": "enabled", "budget_tokens": 1024}, None),
    ("medium", None, {}, {"type": "enabled", "budget_tokens": 1638}, None),
    ("high", None, {}, {"type": "enabled", "budget_tokens": 2457}, None),
    ("xhigh", 32000, {}, {"type": "enabled", "budget_tokens": 25600}, None),
    ("low", 10000, {}, {"type": "enabled", "budget_tokens": 2000}, None),
    ("high", 2000, {"thinking_budget_high": "5000"}, {"type": "enabled", "budget_tokens": 1999}, None),
    ("none", None, {}, {"type": "disabled"}, None),
    ("minimal", None, {"reasoning": "adaptive"}, {"type": "adaptive"}, {"effort": "low"}),
    ("high", None, {"reasoning": "effort"}, None, {"effort": "high"}),
    ("none", None, {"reasoning": "effort"}, {"type": "disabled"}, None),
], ids=["minimal", "low-floor", "medium", "high", "xhigh", "low", "override-clamped", "none", "adaptive", "effort",
        "effort-none"])
def test_reasoning_effort(effort: str, max_output_tokens: int | None, options: dict[str, str],
                          thinking: dict[str, Any] | None, output_config: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"input": "x", "reasoning": {"effort": effort, "summary": "auto"}}
    if max_output_tokens is not None:
        body["max_output_tokens"] = max_output_tokens
    prepared = _prepare(body, options=options)
    assert prepared.get("thinking") == thinking
    assert prepared.get("output_config") == output_config


def test_reasoning_needs_room_and_forbids_forcing_and_sampling() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", "reasoning": {"effort": "low"}, "max_output_tokens": 1024})
    assert caught.value.param == "max_output_tokens"
    reasoning: dict[str, Any] = {"input": "x", "reasoning": {"effort": "low"}, "tools": TWO_TOOLS}
    refused: list[tuple[dict[str, Any], str]] = [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "a"}}, "tool_choice"),
        ({"temperature": 0.5}, "temperature"), ({"top_p": 0.9}, "top_p")]
    for extra, param in refused:
        with pytest.raises(UnsupportedFeature) as caught:
            _prepare(reasoning | extra)
        assert caught.value.param == param
        with pytest.raises(UnsupportedFeature):
            _prepare(reasoning | extra, options={"reasoning": "adaptive"})
    allowed = _prepare(reasoning | {"tool_choice": "auto", "temperature": 1.0, "top_p": 0.95})
    assert (allowed["temperature"], allowed["top_p"], allowed["tool_choice"]) == (1.0, 0.95, {"type": "auto"})
    assert _prepare(reasoning | {"tool_choice": "required"}, options={"reasoning": "effort"})["tool_choice"] == {
        "type": "any"}


@pytest.mark.parametrize("options", [{"reasoning": "always"}, {"max_tokens": "lots"},
                                     {"thinking_budget_low": "1k"}])
def test_bad_deployment_options_are_the_gateways_fault(options: dict[str, str]) -> None:
    with pytest.raises(ServerError, match="deployment test: option"):
        _prepare({"input": "x", "reasoning": {"effort": "low"}}, options=options)


def test_parameters_and_headers() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    prepared = _prepared({
        "input": "x", "max_output_tokens": 300, "temperature": 0.2, "top_p": 0.9, "safety_identifier": "user-1",
        "service_tier": "default", "metadata": {"k": "v"}, "store": False, "prompt_cache_key": "p",
        "truncation": "auto", "include": ["reasoning.encrypted_content"],
        "text": {"format": {"type": "json_schema", "name": "a", "description": "d", "schema": schema},
                 "verbosity": "low"}},
        stream=True, options={"version": "2024-01-01", "beta": "files-api-2025-04-14, structured-outputs-2025-11-13"})
    assert prepared.body == {
        "model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 300, "temperature": 0.2,
        "top_p": 0.9, "output_format": {"type": "json_schema", "schema": schema}, "metadata": {"user_id": "user-1"},
        "service_tier": "standard_only", "stream": True}
    assert prepared.headers == {"x-api-key": API_KEY, "Content-Type": "application/json",
                                "anthropic-version": "2024-01-01",
                                "anthropic-beta": "files-api-2025-04-14,structured-outputs-2025-11-13"}


@pytest.mark.parametrize(("tier", "expected"), [("auto", "auto"), ("priority", "auto"), ("default", "standard_only"),
                                                ("flex", None)])
def test_service_tier(tier: str, expected: str | None) -> None:
    assert _prepare({"input": "x", "service_tier": tier}).get("service_tier") == expected


@pytest.mark.parametrize(("extra", "param"), [
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"top_logprobs": 2}, "top_logprobs"), ({"max_tool_calls": 3}, "max_tool_calls"),
    ({"temperature": 1.5}, "temperature"), ({"text": {"format": {"type": "json_object"}}}, "text.format"),
])
def test_parameters_anthropic_cannot_honour_are_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", **extra})
    assert caught.value.param == param


def test_neutral_values_of_refused_parameters_pass() -> None:
    assert _prepare({"input": "x", "presence_penalty": 0, "frequency_penalty": 0.0, "top_logprobs": 0}) == {
        "model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4096}


# -- replies without a recording (synthetic interactions) --------------------------------------
URL = "https://example.test/v1/messages"
USAGE = {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 5,
         "service_tier": "priority"}


def _sse(*events: dict[str, Any] | str) -> bytes:
    frames = [event if isinstance(event, str) else f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
              for event in events]
    return "".join(frames).encode()


def _message_start(usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "message_start", "message": {"model": "claude-x", "id": "msg_1", "type": "message",
                                                 "role": "assistant", "content": [], "usage": usage or {}}}


def _text_events(index: int, *pieces: str) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            *({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
              for piece in pieces),
            {"type": "content_block_stop", "index": index}]


def _end(stop_reason: str, usage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [{"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
             "usage": usage or {"output_tokens": 1}},
            {"type": "message_stop"}]


def _message(content: list[dict[str, Any]], stop_reason: str = "end_turn",
             usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": "claude-x", "id": "msg_1", "type": "message", "role": "assistant", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": usage or {"input_tokens": 1,
                                                                                  "output_tokens": 1}}


async def _run_synthetic(session: aiohttp.ClientSession, interaction: Interaction,
                         stream: bool = True) -> list[Delta]:
    request, adapted = _upstream({"model": "team-model", "input": "x", "stream": stream},
                                 _deployment("https://example.test/v1", "m"))
    return await replayed(adapted.replies(AnthropicProvider(session).run(request)), interaction)


async def test_usage_counts_cache_reads_and_writes_as_input(session: aiohttp.ClientSession) -> None:
    whole = Interaction.make(URL, body=_message([_text_block("hi")], usage=USAGE))
    stream = Interaction.make(URL, body=_sse(
        _message_start({**USAGE, "output_tokens": 1}), *_text_events(0, "hi"),
        *_end("end_turn", {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
                           "output_tokens": 5})))
    for interaction, streamed in ((whole, False), (stream, True)):
        builder, events = build(await _run_synthetic(session, interaction, streamed))
        validate(builder.resource, events)
        assert usage_tuple(builder.resource) == (60, 30, 5, 0, 65)
        assert (builder.resource.service_tier, builder.upstream_model) == ("priority", "claude-x")


async def test_stream_usage_keeps_the_start_counts_the_final_delta_leaves_out(
        session: aiohttp.ClientSession) -> None:
    body = _sse(_message_start({"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1}),
                *_text_events(0, "a"), *_end("end_turn", {"output_tokens": 9}))
    builder, _ = build(await _run_synthetic(session, Interaction.make(URL, body=body)))
    assert usage_tuple(builder.resource) == (10, 3, 9, 0, 19)


@pytest.mark.parametrize(("stop_reason", "status", "reason"), [
    ("refusal", "incomplete", "content_filter"),
    ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
    ("pause_turn", "completed", None),
    ("stop_sequence", "completed", None),
    ("a_future_reason", "completed", None),
])
async def test_stop_reasons(session: aiohttp.ClientSession, stop_reason: str, status: str,
                            reason: str | None) -> None:
    for interaction, streamed in (
            (Interaction.make(URL, body=_message([_text_block("partial")], stop_reason)), False),
            (Interaction.make(URL, body=_sse(_message_start(), *_text_events(0, "partial"), *_end(stop_reason))),
             True)):
        builder, events = build(await _run_synthetic(session, interaction, streamed))
        validate(builder.resource, events)
        assert builder.resource.status == status
        assert (builder.resource.incomplete_details.reason if builder.resource.incomplete_details else None) == reason


async def test_text_blocks_in_a_row_make_one_message_and_server_blocks_are_skipped(
        session: aiohttp.ClientSession) -> None:
    server = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    content = [_text_block("Paris "), {**_text_block("is big."), "citations": None}, server,
               {"type": "tool_use", "id": "toolu_1", "name": "a", "input": {"x": 1}}, _text_block("Done.")]
    stream = _sse(
        _message_start(), *_text_events(0, "Paris "), *_text_events(1, "is big."),
        {"type": "content_block_start", "index": 2, "content_block": server},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "content_block_start", "index": 3, "content_block": {**content[3], "input": {}}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": '{"x":'}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {"type": "content_block_stop", "index": 3}, *_text_events(4, "Done."), *_end("end_turn"))
    expected = [text("Paris is big."), call("toolu_1", "a", '{"x":1}'), text("Done.")]
    for interaction, streamed in ((Interaction.make(URL, body=_message(content)), False),
                                  (Interaction.make(URL, body=stream), True)):
        builder, events = build(await _run_synthetic(session, interaction, streamed))
        validate(builder.resource, events)
        assert _summary(builder.resource) == expected


@pytest.mark.parametrize(("error", "expected", "status"), [
    ({"type": "overloaded_error", "message": "Overloaded"}, UpstreamUnavailable, 503),
    ({"type": "invalid_request_error", "message": "bad"}, InvalidRequest, 400),
    ({"type": "api_error", "message": "Internal server error"}, UpstreamError, 502),
])
async def test_errors_inside_a_200_stream(session: aiohttp.ClientSession, error: dict[str, Any],
                                          expected: type[GatewayError], status: int) -> None:
    body = _sse(_message_start(), _text_events(0, "partial")[0], _text_events(0, "partial")[1],
                f'event: error\ndata: {json.dumps({"type": "error", "error": error})}   \n\n')
    request, adapted = _upstream({"model": "team-model", "input": "x", "stream": True},
                                 _deployment("https://example.test/v1", "m"))
    seen: list[Delta] = []
    with replay(synthetic(Interaction.make(URL, body=body))), pytest.raises(GatewayError) as caught:
        async for delta in adapted.replies(AnthropicProvider(session).run(request)):
            seen.append(delta)
    assert any(getattr(delta, "text", None) == "partial" for delta in seen)
    assert (type(caught.value), caught.value.status) == (expected, status)
    assert caught.value.message == error["message"]


async def test_a_200_error_body_is_mapped(session: aiohttp.ClientSession) -> None:
    interaction = Interaction.make(URL, body={"type": "error", "error": {"type": "overloaded_error",
                                                                         "message": "Overloaded"}})
    with pytest.raises(UpstreamUnavailable):
        await _run_synthetic(session, interaction, stream=False)


@pytest.mark.parametrize(("status", "headers", "error", "expected", "code", "retry_after"), [
    (529, {"retry-after": "3"}, {"type": "overloaded_error", "message": "Overloaded"}, UpstreamUnavailable,
     "upstream_unavailable", 3.0),
    (429, {"retry-after": "7"}, {"type": "rate_limit_error", "message": "slow down"}, RateLimited,
     "rate_limit_exceeded", 7.0),
    (413, {}, {"type": "request_too_large", "message": "too big"}, PayloadTooLarge, "payload_too_large", None),
    (400, {}, {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
     ContextTooLong, "context_length_exceeded", None),
    (403, {}, {"type": "permission_error", "message": "no access"}, UpstreamError, "upstream_auth_failed", None),
    (500, {}, {"type": "api_error", "message": "Internal server error"}, UpstreamError, "upstream_error", None),
], ids=["529", "429", "413", "context", "403", "500"])
async def test_error_statuses(session: aiohttp.ClientSession, status: int, headers: dict[str, str],
                              error: dict[str, Any], expected: type[GatewayError], code: str,
                              retry_after: float | None) -> None:
    interaction = Interaction.make(URL, status=status, headers={**headers, "Content-Type": "application/json"},
                                   body={"type": "error", "error": error, "request_id": "req_1"})
    for stream in (False, True):
        with pytest.raises(GatewayError) as caught:
            await _run_synthetic(session, interaction, stream=stream)
        assert (type(caught.value), caught.value.code, caught.value.retry_after) == (expected, code, retry_after)


async def test_an_echoed_key_is_redacted(session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    interaction = Interaction.make(URL, status=401, body={"type": "error", "error": {
        "type": "authentication_error", "message": f"invalid x-api-key {API_KEY}"}})
    with pytest.raises(UpstreamError) as caught:
        await _run_synthetic(session, interaction, stream=False)
    assert API_KEY not in caught.value.message and "[redacted]" in caught.value.message
    # Nor in the raw body the debug log keeps.
    assert "invalid x-api-key [redacted]" in caplog.text and API_KEY not in caplog.text


async def test_a_stream_that_ends_without_a_stop_reason_fails(session: aiohttp.ClientSession) -> None:
    body = _sse(_message_start(), *_text_events(0, "cut"))
    with pytest.raises(UpstreamError, match="stream ended early"):
        await _run_synthetic(session, Interaction.make(URL, body=body))


def test_stream_decoder_rejects_deltas_for_blocks_that_never_started() -> None:
    decoder = AnthropicStreamDecoder("test-host", no_error)
    with pytest.raises(UpstreamError, match="never started"):
        decoder.feed("content_block_delta", json.dumps(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}).encode())
    with pytest.raises(UpstreamError, match="without an index"):
        decoder.feed("content_block_stop", b'{"type": "content_block_stop"}')
    with pytest.raises(UpstreamError, match="without an id or a name"):
        decoder.feed("content_block_start", json.dumps(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "input": {}}}).encode())


# -- the simulator speaks Anthropic ------------------------------------------------------------
@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    running = await start_simulator(options=SimulatorOptions(api_key="sim-key"))
    try:
        yield running.url
    finally:
        await running.close()


def _event_kinds(sse: str) -> list[str]:
    """Event types in order, runs of one type folded and pings left out (both vary by reply)."""
    kinds: list[str] = []
    for line in sse.splitlines():
        kind = line.removeprefix("event: ")
        if line.startswith("event: ") and kind != "ping" and (not kinds or kinds[-1] != kind):
            kinds.append(kind)
    return kinds


async def test_simulator_replies_in_the_recorded_shapes(simulator: str, session: aiohttp.ClientSession) -> None:
    recorded_json = load("anthropic/text-nonstream.yaml").interactions[0].response_json()
    recorded_stream = load("anthropic/text-stream.yaml").interactions[0].response_text()
    headers = {"x-api-key": "sim-key", "anthropic-version": "2023-06-01"}
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(f"{simulator}/v1/messages", json=body, headers=headers) as reply:
        whole = await reply.json()
    assert whole.keys() == recorded_json.keys()
    assert whole["usage"].keys() == recorded_json["usage"].keys()
    assert (whole["content"], whole["stop_reason"]) == ([_text_block("Echo: hi")], "end_turn")
    async with session.post(f"{simulator}/v1/messages", json=body | {"stream": True}, headers=headers) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        streamed = await reply.text()
    assert _event_kinds(streamed) == _event_kinds(recorded_stream)
    async with session.post(f"{simulator}/v1/messages", json=body, headers={"x-api-key": "wrong"}) as reply:
        assert reply.status == 401
        assert (await reply.json())["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}


TOOL_USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {}}]}
RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"max_tokens": 10, "messages": [{"role": "assistant", "content": "hi"}]},
    {"max_tokens": 10, "messages": [{"role": "user", "content": "q"}, TOOL_USE, {"role": "user", "content": "x"}]},
    {"max_tokens": 10, "messages": [{"role": "user", "content": "q"}, TOOL_USE,
                                    {"role": "user", "content": [_text_block("x"), RESULT]}]},
    {"max_tokens": 10, "messages": [{"role": "user", "content": [RESULT]}]},
    {"max_tokens": 10, "messages": [{"role": "user", "content": "q"}],
     "output_format": {"type": "json_schema", "schema": {"type": "object"}}},
    {"max_tokens": 2000, "messages": [{"role": "user", "content": "q"}],
     "thinking": {"type": "enabled", "budget_tokens": 2000}},
    {"max_tokens": 2000, "messages": [{"role": "user", "content": "q"}], "tools": [{"name": "a"}],
     "tool_choice": {"type": "any"}, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"max_tokens": 10, "messages": [{"role": "user", "content": "q"}], "temperature": 1.5},
], ids=["no-max-tokens", "assistant-first", "unanswered-call", "result-not-first", "result-without-call",
        "output-format-without-beta", "budget-too-large", "forced-tool-while-thinking", "temperature"])
async def test_simulator_refuses_what_anthropic_refuses(simulator: str, session: aiohttp.ClientSession,
                                                        body: dict[str, Any]) -> None:
    async with session.post(f"{simulator}/v1/messages", json={"model": "m", **body},
                            headers={"x-api-key": "sim-key"}) as reply:
        assert reply.status == 400
        error = await reply.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("serial", "calls"), [(False, ["a", "b"]), (True, ["a"])])
async def test_simulator_honours_disable_parallel_tool_use(simulator: str, session: aiohttp.ClientSession,
                                                           serial: bool, calls: list[str]) -> None:
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "q"}],
            "tools": [{"name": "a", "input_schema": {"type": "object"}}, {"name": "b", "input_schema": {}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": serial}}
    async with session.post(f"{simulator}/v1/messages", json=body,
                            headers={"x-api-key": "sim-key", "x-sim-parallel": "2"}) as reply:
        message = await reply.json()
    assert [block["name"] for block in message["content"]] == calls
    assert message["stop_reason"] == "tool_use"
