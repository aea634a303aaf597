"""Gemini dialect (``providers.gemini``, AI Studio and Vertex AI) against recorded traffic.

Every interaction of every cassette in ``gemini/``, and every Google call recorded in another
provider's folder (the first turn of their cross-provider histories), is either a ``Case`` below
or listed in ``SKIPPED`` with its reason (``test_every_recorded_interaction_is_accounted_for``
enforces that).
A case is the Responses request a client would send for what the recording's client sent,
decoded as the gateway decodes an incoming body; a history item that carries reasoning state
holds it unsealed, as the engine hands it to the adapter. For each case:

1. ``prepare()`` must produce the recorded body up to the ``Normalisation``s the case names (each
   says why, and must change something, so a stale one fails);
2. ``run()`` replays the interaction: the body and URL aiohttp sent must be the prepared ones and
   the credential the deployment's (``x-goog-api-key``; for Vertex a bearer token from a token
   server on 127.0.0.1, fetched before the replay starts because the replay answers every
   aiohttp request);
3. the deltas go through ``ResponseBuilder``: the output (texts, call ids and names and arguments,
   thought summaries, the signature state), usage (thinking counted into output), status, model
   and service tier must equal what the recording says, and the events and the resource must
   validate against the spec. Error recordings must map to the expected ``GatewayError``.

Expected values were read from the recorded replies (long texts as prefix, suffix and length;
signatures looked up in the recording). The tests after the cases cover the thought-signature
round trip with real adapter output, Vertex authentication, and what no recording shows (schema
conversion, in-band errors and finish reasons) with synthetic interactions or ``prepare`` alone.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.gemini import GeminiProvider
from providers.google_auth import ServiceAccountTokens
from providers.simulator import SimulatorOptions, start_simulator
from proxy.adaptation import adapt
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
from proxy.schema import deltas as d
from proxy.schema.items import Compaction, Item, ItemReference, Message, OpaqueItem, Reasoning
from proxy.schema.request import FunctionTool
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, Timeouts
from proxy.sealing import Sealer
from tests.conformance import _cases
from tests.conformance._cases import (
    ALIAS,
    API_KEY,
    BOOK_SCHEMA,
    Failure,
    Ignore,
    Long,
    Normalisation,
    Outcome,
    assert_accounted_for,
    assistant,
    build,
    call,
    case_params,
    check_case,
    collect,
    decoded_request,
    fc,
    fco,
    normalise,
    offline,
    recorded,
    summary,
    system,
    text,
    to_json,
    usage_tuple,
    user,
)
from tests.conformance.cassette import Interaction, Recording, fixtures_dir, load, replay, synthetic
from tests.spec_validation import validate_stream

DIR = "gemini"
AI_STUDIO = "https://generativelanguage.googleapis.com/v1beta"
VERTEX = "https://aiplatform.googleapis.com/v1beta1"


# -- normalisations: documented differences between a recorded request and the adapter's -------
@dataclass(frozen=True)
class Rename(Normalisation):
    """A recorded key the adapter spells ``to`` (the SDKs' snake_case; the API takes both)."""

    path: str
    to: str
    why: str

    def _at(self, node: Any, key: str) -> int:
        if not isinstance(node, dict) or key not in node:
            return 0
        node[self.to] = node.pop(key)
        return 1


@dataclass(frozen=True)
class Replace(Normalisation):
    """A recorded key whose value the adapter sends as ``ours`` under ``to``."""

    path: str
    to: str
    ours: Any
    why: str

    def _at(self, node: Any, key: str) -> int:
        if not isinstance(node, dict) or key not in node:
            return 0
        del node[key]
        node[self.to] = self.ours
        return 1


@dataclass(frozen=True)
class StandardBase64(Normalisation):
    """A recorded base64 value in the URL-safe alphabet, which the adapter passes on as it got it
    (in the standard one); Gemini accepts both."""

    path: str
    why: str

    def _at(self, node: Any, key: str) -> int:
        if not isinstance(node, dict) or not isinstance(node.get(key), str) or not re.search(r"[-_]", node[key]):
            return 0
        node[key] = node[key].replace("-", "+").replace("_", "/")
        return 1


@dataclass(frozen=True)
class UpperTypes(Normalisation):
    """Lower-case schema types the client wrote; the adapter writes the API's upper-case names."""

    path: str
    why: str

    def _at(self, node: Any, key: str) -> int:
        if not isinstance(node, dict) or key not in node:
            return 0
        return _upper_types(node[key])


def _upper_types(schema: Any) -> int:
    if not isinstance(schema, dict):
        return 0
    changed = 0
    if isinstance(schema.get("type"), str) and schema["type"].islower():
        schema["type"] = schema["type"].upper()
        changed = 1
    return changed + sum(_upper_types(sub) for sub in (schema.get("properties") or {}).values())


EMPTY_CONFIG = Ignore("generationConfig", "Mirascope sends an empty generationConfig; the adapter leaves it out", {})
SYSTEM_ROLE = Ignore("systemInstruction.role", "the SDK labels the system instruction role user; the API ignores a "
                     "role there", "user")
MODALITIES = Ignore("generationConfig", "pydantic-ai asks for text output explicitly; text is Gemini's default",
                    {"responseModalities": ["TEXT"]})
SDK_SNAKE = "the SDK writes snake_case; the API takes both, the adapter writes camelCase"
THINKING_SNAKE = (Rename("generationConfig.thinkingConfig.thinking_budget", "thinkingBudget", SDK_SNAKE),)
NOT_RESPONSES = "not a Responses parameter"
SAMPLING_EXTRAS = (Ignore("generationConfig.topK", NOT_RESPONSES), Ignore("generationConfig.seed", NOT_RESPONSES),
                   Ignore("generationConfig.stopSequences", f"stop is {NOT_RESPONSES}"),
                   Ignore("generationConfig.thinkingConfig.include_thoughts", "Mirascope sends the default "
                          "(no thought summaries) explicitly", False))
SDK_BASE64 = "the SDK re-encodes bytes in URL-safe base64 (the reply had the standard alphabet)"


# -- the vocabulary of cases ---------------------------------------------------------------------
def thought(*summary: Any) -> dict[str, Any]:
    return {"type": "reasoning", "summary": list(summary), "state": None}


def signatures(**state: Any) -> dict[str, Any]:
    """The reasoning item that carries a reply's thought signatures (its unsealed state)."""
    return {"type": "reasoning", "summary": [], "state": state}


@dataclass(frozen=True)
class Case(_cases.Case):
    vertex: bool = False
    sse_from_array: bool = False
    """The recording streamed without ``alt=sse`` (one JSON array); its chunks are replayed as the
    SSE events the adapter asks for."""


def reasoning(*summary: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "summary": [{"type": "summary_text", "text": s} for s in summary]}
    if state is not None:
        item["encrypted_content"] = json.dumps(state)
    return item


def reply_signature(cassette: str, interaction: int) -> str:
    """The (only) thoughtSignature of a recorded reply, as the upstream sent it."""
    body = load(f"{DIR}/{cassette}", interactions=[interaction]).interactions[0].response_text()
    (found,) = re.findall(r'"thoughtSignature":\s*"([^"]+)"', body)
    return str(found)


def standard_b64(value: str) -> str:
    return value.replace("-", "+").replace("_", "/")


# -- what the recordings' clients sent -------------------------------------------------------------
ADD = "What is 4200 + 42?"
PRIMES = ("How many primes below 400 contain 79 as a substring? Answer ONLY with the number, not sharing which "
          "primes they are.")
PRIMES_FOLLOW_UP = "If you remember what the primes were, then share them, or say 'I don't remember.'"
SECRETS = "Please retrieve the secrets associated with each of these passwords: mellon,radiance"
SECRET_TOOL = {"type": "function", "name": "secret_retrieval_tool",
               "description": "A tool that requires a password to retrieve a secret.",
               "parameters": {"properties": {"password": {"title": "Password", "type": "string"}},
                              "required": ["password"], "type": "object", "additionalProperties": False}}
WEATHER = "What's the weather in Paris?"
WEATHER_SCHEMA = {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}
GEMINI_WEATHER = {"properties": {"city": {"type": "STRING"}}, "required": ["city"], "type": "OBJECT"}
MULTIPLY_TOOL = {"type": "function", "name": "multiply", "description": "Multiply two numbers.",
                 "parameters": {"properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                                "required": ["x", "y"], "type": "object"}}
COUNTRY_TOOL = {"type": "function", "name": "get_country", "description": "",
                "parameters": {"additionalProperties": False, "properties": {}, "type": "object"}}
BOOK_FORMAT = {"type": "json_schema", "name": "Book", "strict": True, "schema": BOOK_SCHEMA}
SECRETS_ANSWER = Long('The secrets have been retrieved. For the password "mellon", the secret is "Welcome to ',
                      'For the password "radiance", the secret is "Life before Death".', 158)
SECRETS_ANSWER_STREAM = Long('The secrets associated with the passwords "mellon" and "radiance" are "Welcome to Moria',
                             '!" and "Life before Death" respectively.', 127)
THOUGHTS_STREAM = (Long("**Analyzing Prime Substrings**\n\nOkay, so I'm start",
                        "ck to implement, and should give us the answer!\n\n\n", 289),
                   Long("**Confirming Substring Occurrences**\n\nI've refined",
                        "the ranges to ensure completeness and accuracy.\n\n\n", 392),
                   Long("**Counting Substring Occurrences**\n\nI've carefully",
                        "e are only three such primes: 79, 179, and 379.\n\n\n", 285),
                   Long("**Revising Prime Substrings**\n\nI've meticulously r",
                        "e, I can state with certainty the final answer.\n\n\n", 291))
FLASH, FLASH3, PRO3 = "gemini-2.5-flash", "gemini-3-flash-preview", "gemini-3-pro-preview"
PARALLEL_IDS = ("call_gem_AJnyaJv6GPulqtsP5Z6fgAs_0", "call_gem_AJnyaJv6GPulqtsP5Z6fgAs_1")
PARALLEL_STREAM_IDS = ("call_gem_G5nyaJuGE-yrqtsPmJHUoAs_0", "call_gem_G5nyaJuGE-yrqtsPmJHUoAs_1")
MULTIPLY_ID = "call_gem_6XJFadi3PJOx-sAPgJ3S6Qs_0"
PYDANTIC_ID = "pyd_ai_29bf73b69e02448588e15893d47a3e7e"


def secrets_request(stream: bool, ids: tuple[str, str] | None = None, cassette: str = "") -> dict[str, Any]:
    items: list[dict[str, Any]] = [system("Use parallel tool calling."), user(SECRETS)]
    if ids is not None:
        items += [fc(ids[0], "secret_retrieval_tool", '{"password":"mellon"}'),
                  fc(ids[1], "secret_retrieval_tool", '{"password":"radiance"}'),
                  reasoning(state={"calls": {ids[0]: reply_signature(cassette, 0)}}),
                  fco(ids[0], "Welcome to Moria!"), fco(ids[1], "Life before Death")]
    return {"model": ALIAS, "input": items, "tools": [SECRET_TOOL], "stream": stream}


def secrets_calls(ids: tuple[str, str], cassette: str, usage: tuple[int, int, int, int, int]) -> Outcome:
    return Outcome([call(ids[0], "secret_retrieval_tool", '{"password":"mellon"}'),
                    call(ids[1], "secret_retrieval_tool", '{"password":"radiance"}'),
                    signatures(calls={ids[0]: reply_signature(cassette, 0)})], usage, FLASH)


PARALLEL_NORMALISE = (SYSTEM_ROLE, EMPTY_CONFIG)
SIGNATURE_BACK = StandardBase64("contents.1.parts.0.thoughtSignature", SDK_BASE64)

CASES: list[Case] = [
    # ---------------------------------------------------------------- text
    Case("text-nonstream", "text-nonstream.yaml", 0, {"model": ALIAS, "input": ADD},
         Outcome([text(Long("To calculate 4200 + 42:\n\n*   **Hundreds, thousands",
                            ":\n4200\n+  42\n-----\n4242\n\nSo, 4200 + 42 = **4242**.", 153))],
                 (13, 0, 102, 25, 115), FLASH)),
    Case("text-stream", "text-stream-sse.yaml", 0, {"model": ALIAS, "input": ADD, "stream": True},
         Outcome([text(Long("To find the sum of 4200 + 42, we can align the num",
                            "00\n+   42\n------\n  4242\n\nSo, 4200 + 42 = **4242**.", 133))],
                 (13, 0, 138, 75, 151), FLASH)),
    Case("finish-max-tokens", "finish-max-tokens.yaml", 0,
         {"model": ALIAS, "input": "List all U.S. states.", "max_output_tokens": 50},
         Outcome([text("Here is a list of all 50 U")], (9, 0, 48, 38, 57), FLASH, incomplete="max_output_tokens")),
    Case("multi-turn-history", "multi-turn-history.yaml", 1,
         {"model": ALIAS, "input": [user("Who created you?"), assistant("I was created by Anthropic."),
                                    user("Can you double-check that?")]},
         Outcome([text(Long("You are absolutely right to ask for a double-check",
                            " am a large language model, trained by **Google**.", 136))],
                 (21, 0, 341, 310, 362), FLASH)),
    Case("sampling-params-minimal-thinking", "sampling-params-stop.yaml", 0,
         {"model": ALIAS, "input": ADD, "temperature": 0.7, "top_p": 0.3, "max_output_tokens": 500,
          "reasoning": {"effort": "minimal"}},
         Outcome([text("To find the sum of 4200 and 42, you add them together:\n\n4200\n+   42\n------\n")],
                 (13, 0, 107, 75, 120), FLASH),
         normalise=(*SAMPLING_EXTRAS, *THINKING_SNAKE)),
    Case("sampling-params-no-thinking", "sampling-params-stop.yaml", 1,
         {"model": ALIAS, "input": ADD, "temperature": 0.7, "top_p": 0.3, "max_output_tokens": 500,
          "reasoning": {"effort": "none"}},
         Outcome([text("To find the sum of 4200 and 42, we can add them together:\n\n   4200\n+    42\n-------\n   ")],
                 (13, 0, 34, 0, 47), FLASH),
         normalise=(*SAMPLING_EXTRAS, *THINKING_SNAKE)),
    # ---------------------------------------------------------------- input parts
    Case("input-image-inline", "input-image-inline.yaml", 0,
         lambda: {"model": ALIAS, "input": [user([
             {"type": "input_text", "text": "Describe the following image in one sentence"},
             {"type": "input_image", "image_url": "data:image/png;base64," + standard_b64(recorded(
                 f"{DIR}/input-image-inline.yaml", 0, "contents", 0, "parts", 1, "inlineData", "data"))}])]},
         Outcome([text(Long("The image displays a three-dimensional jigsaw puzz",
                            "few pieces missing to reveal a dark gray interior.", 193))],
                 (266, 0, 179, 145, 445), FLASH),
         normalise=(StandardBase64("contents.0.parts.1.inlineData.data", SDK_BASE64),)),
    Case("input-pdf-inline", "input-pdf-inline.yaml", 0,
         lambda: {"model": ALIAS, "input": [user([
             {"type": "input_text", "text": "What text is in this PDF document? Reply in one short sentence."},
             {"type": "input_file", "filename": "document.pdf",
              "file_data": "data:application/pdf;base64," + standard_b64(recorded(
                  f"{DIR}/input-pdf-inline.yaml", 0, "contents", 0, "parts", 1, "inlineData", "data"))}])]},
         Outcome([text('The document contains the text "Hello, world!".')], (273, 0, 49, 39, 322), FLASH),
         normalise=(StandardBase64("contents.0.parts.1.inlineData.data", SDK_BASE64),)),
    # ---------------------------------------------------------------- structured output
    Case("json-schema", "json-schema.yaml", 0,
         {"model": ALIAS, "input": "Please recommend the most popular book by Patrick Rothfuss",
          "text": {"format": BOOK_FORMAT}},
         Outcome([text('{"title":"THE NAME OF THE WIND","author":{"first_name":"Patrick","last_name":"Rothfuss"},'
                       '"rating":7}')], (11, 0, 256, 227, 267), FLASH),
         normalise=(Rename("generationConfig.responseSchema.property_ordering", "propertyOrdering", SDK_SNAKE),
                    Rename("generationConfig.responseSchema.properties.author.property_ordering", "propertyOrdering",
                           SDK_SNAKE))),
    # ---------------------------------------------------------------- thinking
    Case("thinking", "thinking.yaml", 0,
         {"model": ALIAS, "input": PRIMES, "reasoning": {"effort": "medium", "summary": "auto"}},
         Outcome([thought(Long('**Analyzing Prime Numbers for the "79" Substring**',
                               ">= 790, which is too large.\n\nThus the count is 3.\n", 1423)),
                  text(Long('The primes below 400 that contain "79" as a substr',
                            "below 400.\n\nTherefore, there are 3 such primes.\n\n3", 355))],
                 (30, 0, 1890, 1754, 1920), FLASH),
         normalise=(*THINKING_SNAKE, Rename("generationConfig.thinkingConfig.include_thoughts", "includeThoughts",
                                            SDK_SNAKE))),
    Case("thinking-history", "thinking.yaml", 1,
         lambda: {"model": ALIAS, "reasoning": {"effort": "low"}, "input": [
             user(PRIMES), reasoning(recorded(f"{DIR}/thinking.yaml", 1, "contents", 1, "parts", 0, "text")),
             assistant(recorded(f"{DIR}/thinking.yaml", 1, "contents", 1, "parts", 1, "text")),
             user(PRIMES_FOLLOW_UP)]},
         Outcome([text("I do remember. They were:\n\n79\n179\n379")], (881, 0, 64, 46, 945), FLASH),
         normalise=THINKING_SNAKE),
    Case("thinking-stream", "thinking-stream.yaml", 0,
         {"model": ALIAS, "input": PRIMES, "reasoning": {"effort": "medium", "summary": "auto"}, "stream": True},
         Outcome([thought(*THOUGHTS_STREAM), text("3")], (30, 0, 1947, 1947, 1977), FLASH),
         normalise=(*THINKING_SNAKE, Rename("generationConfig.thinkingConfig.include_thoughts", "includeThoughts",
                                            SDK_SNAKE))),
    Case("thinking-stream-history", "thinking-stream.yaml", 1,
         lambda: {"model": ALIAS, "reasoning": {"effort": "low"}, "stream": True, "input": [
             user(PRIMES), reasoning(*(recorded(f"{DIR}/thinking-stream.yaml", 1, "contents", 1, "parts", n, "text")
                                       for n in range(4))),
             assistant("3"), user(PRIMES_FOLLOW_UP)]},
         Outcome([text("I don't remember.")], (365, 0, 83, 77, 448), FLASH),
         normalise=THINKING_SNAKE),
    # ---------------------------------------------------------------- tools
    Case("tools-parallel-call", "tools-parallel-roundtrip.yaml", 0, secrets_request(False),
         secrets_calls(PARALLEL_IDS, "tools-parallel-roundtrip.yaml", (70, 0, 116, 76, 186)),
         normalise=PARALLEL_NORMALISE),
    Case("tools-parallel-results", "tools-parallel-roundtrip.yaml", 1,
         lambda: secrets_request(False, PARALLEL_IDS, "tools-parallel-roundtrip.yaml"),
         Outcome([text(SECRETS_ANSWER)], (152, 0, 37, 0, 189), FLASH),
         normalise=(*PARALLEL_NORMALISE, SIGNATURE_BACK)),
    Case("tools-parallel-call-stream", "tools-parallel-roundtrip-stream.yaml", 0, secrets_request(True),
         secrets_calls(PARALLEL_STREAM_IDS, "tools-parallel-roundtrip-stream.yaml", (70, 0, 101, 61, 171)),
         normalise=PARALLEL_NORMALISE),
    Case("tools-parallel-results-stream", "tools-parallel-roundtrip-stream.yaml", 1,
         lambda: secrets_request(True, PARALLEL_STREAM_IDS, "tools-parallel-roundtrip-stream.yaml"),
         Outcome([text(SECRETS_ANSWER_STREAM)], (211, 0, 30, 0, 241), FLASH),
         normalise=(*PARALLEL_NORMALISE, SIGNATURE_BACK)),
    Case("tool-config-any", "tool-config-any.yaml", 0,
         {"model": ALIAS, "input": [user(WEATHER)], "tool_choice": "required", "tools": [
             {"type": "function", "name": "get_weather", "description": "Get weather for a city",
              "parameters": WEATHER_SCHEMA}]},
         Outcome([call("call_gem__cF7adWFD6u-qtsPvbuDoQI_0", "get_weather", '{"city":"Paris"}'),
                  signatures(calls={"call_gem__cF7adWFD6u-qtsPvbuDoQI_0": reply_signature("tool-config-any.yaml", 0)})],
                 (46, 0, 63, 48, 109), FLASH),
         normalise=(MODALITIES, Replace("tools.0.functionDeclarations.0.parameters_json_schema", "parameters",
                                        GEMINI_WEATHER, "pydantic-ai sends JSON Schema as parameters_json_schema; the "
                                        "adapter sends Gemini's OpenAPI subset, which every model takes"))),
    Case("tool-config-none", "tool-config-none.yaml", 0,
         {"model": ALIAS, "input": [user(WEATHER)], "tool_choice": "none", "tools": [
             {"type": "function", "name": "get_weather", "description": "Get the current weather for a city.",
              "parameters": {**WEATHER_SCHEMA, "additionalProperties": False}}]},
         Outcome([text(Long("Okay, let me check the current weather in Paris fo",
                            "t chance of rain expected for the rest of the day.", 392))],
                 (49, 0, 1124, 996, 1173), FLASH),
         normalise=(MODALITIES, Replace("tools.0.functionDeclarations.0.parameters_json_schema", "parameters",
                                        GEMINI_WEATHER, "pydantic-ai sends JSON Schema as parameters_json_schema; the "
                                        "adapter sends Gemini's OpenAPI subset, without additionalProperties"))),
    # ---------------------------------------------------------------- Gemini 3 thought signatures
    Case("gemini3-call", "tools-thought-signatures-gemini3.yaml", 0,
         {"model": ALIAS, "input": [user("What is 5 times 3?")], "tools": [MULTIPLY_TOOL], "stream": True},
         Outcome([call(MULTIPLY_ID, "multiply", '{"y":3,"x":5}'),
                  signatures(calls={MULTIPLY_ID: reply_signature("tools-thought-signatures-gemini3.yaml", 0)})],
                 (60, 0, 48, 32, 108), FLASH3),
         normalise=(Ignore("safetySettings", "llm-gemini turns Google's safety filters off; the gateway keeps the "
                           "defaults"),
                    UpperTypes("tools.0.functionDeclarations.0.parameters", "llm-gemini writes lower-case types")),
         sse_from_array=True),
    Case("gemini3-result", "tools-thought-signatures-gemini3.yaml", 1,
         lambda: {"model": ALIAS, "tools": [MULTIPLY_TOOL], "stream": True, "input": [
             user("What is 5 times 3?"), fc(MULTIPLY_ID, "multiply", '{"y":3,"x":5}'),
             reasoning(state={"calls": {MULTIPLY_ID: reply_signature("tools-thought-signatures-gemini3.yaml", 0)}}),
             fco(MULTIPLY_ID, "15")]},
         Outcome([text("5 times 3 is 15.")], (121, 0, 9, 0, 130), FLASH3),
         normalise=(Ignore("safetySettings", "llm-gemini turns Google's safety filters off; the gateway keeps the "
                           "defaults"),
                    UpperTypes("tools.0.functionDeclarations.0.parameters", "llm-gemini writes lower-case types"),
                    Ignore("contents.1.parts.0", "llm-gemini keeps the empty text part that ended the streamed "
                           "reply; it carried no signature", {"text": ""}),
                    Rename("contents.1.parts.0.function_call", "functionCall", "llm-gemini writes snake_case"),
                    Rename("contents.2.parts.0.function_response", "functionResponse",
                           "llm-gemini writes snake_case")),
         sse_from_array=True),
    Case("gemini3-pro-call-stream", "tool-call-thought-signature-stream.yaml", 0,
         {"model": ALIAS, "input": [user("What is the capital of the user country? Call the tool")],
          "tools": [COUNTRY_TOOL], "stream": True},
         Outcome([call("call_gem_QUVVadTSNJ6_qtsPvN7J8Q0_0", "get_country", "{}"),
                  signatures(calls={"call_gem_QUVVadTSNJ6_qtsPvN7J8Q0_0":
                                    reply_signature("tool-call-thought-signature-stream.yaml", 0)})],
                 (29, 0, 212, 202, 241), PRO3),
         normalise=(MODALITIES, Ignore("tools.0.functionDeclarations.0.parameters_json_schema",
                                       "a function without parameters is declared without any (Gemini rejects an "
                                       "OBJECT schema with no properties)"))),
    Case("gemini3-pro-result-stream", "tool-call-thought-signature-stream.yaml", 1,
         lambda: {"model": ALIAS, "tools": [COUNTRY_TOOL], "stream": True, "input": [
             user("What is the capital of the user country? Call the tool"), fc(PYDANTIC_ID, "get_country", "{}"),
             reasoning(state={"calls": {PYDANTIC_ID: reply_signature("tool-call-thought-signature-stream.yaml", 0)}}),
             fco(PYDANTIC_ID, "Mexico")]},
         Outcome([text("The capital of Mexico is Mexico City.")], (257, 0, 8, 0, 265), PRO3),
         normalise=(MODALITIES, Ignore("tools.0.functionDeclarations.0.parameters_json_schema",
                                       "a function without parameters is declared without any"),
                    SIGNATURE_BACK,
                    Rename("contents.2.parts.0.functionResponse.response.return_value", "output",
                           "pydantic-ai names the result return_value; the adapter wraps text outputs as output"))),
    # The first turn of other providers' cross-provider history recordings.
    Case("history-first-turn-for-anthropic", "../anthropic/multi-turn-history.yaml", 0,
         {"model": ALIAS, "input": "Who created you?"},
         Outcome([text("I am a large language model, trained by Google.")], (5, 0, 97, 86, 102), FLASH)),
    Case("history-first-turn-for-openai", "../openai-responses/multi-turn-history.yaml", 0,
         {"model": ALIAS, "input": [user("Who created you?")]},
         Outcome([text("I am a large language model, trained by Google.")], (5, 0, 113, 102, 118), FLASH)),
    # ---------------------------------------------------------------- errors
    Case("invalid-key", "error-400-invalid-api-key.yaml", 0,
         {"model": ALIAS, "input": "This should fail with AuthenticationError"},
         Failure(UpstreamError, 502, "upstream_auth_failed", "API key not valid")),
    Case("model-not-found", "error-404-model-not-found.yaml", 0,
         {"model": ALIAS, "input": "This should fail with NotFoundError"},
         Failure(InvalidRequest, 400, "model_not_found", "is not found for API version v1beta", param="model")),
    # ---------------------------------------------------------------- Vertex AI
    Case("vertex-flex", "vertex-service-tier-flex.yaml", 0,
         {"model": ALIAS, "input": "Reply with exactly: OK", "service_tier": "flex"},
         Outcome([text("OK"), signatures(texts={"0": reply_signature("vertex-service-tier-flex.yaml", 0)})],
                 (5, 0, 52, 51, 57), FLASH3, service_tier="flex"),
         normalise=(MODALITIES,), vertex=True),
]

# Interactions not replayed as cases, with the reason. Each becomes a skipped test so the report
# lists it; test_every_recorded_interaction_is_accounted_for keeps this list complete.
SKIPPED: dict[tuple[str, int], str] = {
    ("multi-turn-history.yaml", 0): "an Anthropic call (the history's first turn); another adapter replays it",
    ("error-404-model-not-found.yaml", 1): "client retry: same request and reply as #0",
}


# -- helpers ---------------------------------------------------------------------------------------
def _deployment(model: str, *, base_url: str = AI_STUDIO, **overrides: Any) -> Deployment:
    return Deployment(name="test", provider="google", dialect="gemini", base_url=base_url, model=model,
                      api_key=API_KEY, **overrides)


def _reasoning(item: Reasoning) -> dict[str, Any]:
    state = json.loads(item.encrypted_content) if isinstance(item.encrypted_content, str) else None
    assert not item.content, "Gemini gives thought summaries, not raw reasoning"
    return {"type": "reasoning", "summary": [p.text for p in item.summary], "state": state}


def _summary(resource: ResponseResource) -> list[dict[str, Any]]:
    return summary(resource, reasoning=_reasoning)


def _sse_recording(recording: Recording) -> Recording:
    """A recording streamed as one JSON array, re-framed as the SSE events of ``alt=sse``."""
    (interaction,) = recording.interactions
    frames = "".join(f"data: {json.dumps(chunk)}\r\n\r\n" for chunk in interaction.response_json())
    return synthetic(Interaction.make(interaction.uri + "?alt=sse", body=frames, request_body=interaction.request_body,
                                      headers={"Content-Type": "text/event-stream"}), name=recording.name)


# -- the token server (Vertex) ---------------------------------------------------------------------
@dataclass
class TokenServer:
    url: str
    key: rsa.RSAPrivateKey
    service_account: str
    assertions: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    """Tokens to hand out, in order; when empty, ``ya29.token-<n>``."""
    status: int = 200

    @property
    def issued(self) -> int:
        return len(self.assertions)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def token_server(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[TokenServer]:
    """An OAuth token endpoint on 127.0.0.1 that verifies the service account's JWT assertions."""
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    account = json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "kid-1",
                          "private_key": pem, "client_email": "gateway@p.iam.gserviceaccount.com",
                          "token_uri": "https://oauth2.googleapis.com/token"})
    state = TokenServer(url="", key=rsa_key, service_account=account)

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assertion = str(form["assertion"])
        signing_input, _, signature = assertion.rpartition(".")
        rsa_key.public_key().verify(_unb64(signature), signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        header, claims = (json.loads(_unb64(part)) for part in signing_input.split("."))
        assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
        state.assertions.append(claims)
        if state.status != 200:
            return web.json_response({"error": "invalid_grant", "error_description": "gateway@p is disabled"},
                                     status=state.status)
        value = state.tokens.pop(0) if state.tokens else f"ya29.token-{state.issued}"
        return web.json_response({"access_token": value, "expires_in": 3599, "token_type": "Bearer"})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    try:
        yield state
    finally:
        await runner.cleanup()


def _unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _vertex(server: TokenServer, model: str, *, base_url: str = VERTEX, **options: str) -> Deployment:
    return Deployment(name="vertex", provider="vertex", dialect="gemini", base_url=base_url, model=model,
                      credentials={"service_account": server.service_account}, region="global",
                      options={"platform": "vertex", "project": "pydantic-ai", "token_url": server.url, **options})


# -- the recorded cases ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CASES, SKIPPED, lambda cassette: f"{DIR}/{cassette}"))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession, token_server: TokenServer) -> None:
    recording = load(f"{DIR}/{case.cassette}", interactions=[case.interaction])
    if case.sse_from_array:
        recording = _sse_recording(recording)
    model = re.search(r"/models/([^:/]+):", recording.interactions[0].path)
    assert model is not None
    provider = GeminiProvider(session)
    if case.vertex:
        deployment = _vertex(token_server, model[1])
        # The replay answers every aiohttp request, the token endpoint's too: fetch the token first.
        await provider.access_token(deployment)
        headers = {"Authorization": "Bearer ya29.token-1", "x-goog-api-key": None,
                   "X-Vertex-AI-LLM-Request-Type": "shared", "X-Vertex-AI-LLM-Shared-Request-Type": "flex"}
    else:
        deployment = _deployment(model[1])
        headers = {"x-goog-api-key": API_KEY, "Authorization": None}
    upstream = decoded_request(case.body(), deployment)
    prepared = provider.prepare(upstream)
    assert "Authorization" not in prepared.headers  # prepare does no I/O: the token is added by run
    _, result = await check_case(case, recording, prepared, provider.run(upstream), headers=headers,
                                 summarise=_summary)
    if isinstance(case.expect, Outcome):
        calls = any(item["type"] == "function_call" for item in case.expect.output)
        finish = case.expect.incomplete or ("tool_calls" if calls else "stop")  # Gemini says STOP here too
        assert [delta for delta in result if isinstance(delta, d.Finish)] == [d.Finish(reason=finish)]


def test_every_recorded_interaction_is_accounted_for() -> None:
    """Every interaction in gemini/, and every Google call recorded in another provider's folder."""
    recorded_ids = set()
    for path in sorted(fixtures_dir().glob("*/*.yaml")):
        name = path.name if path.parent.name == DIR else f"../{path.parent.name}/{path.name}"
        recorded_ids |= {(name, i.index) for i in load(f"{DIR}/{name}").interactions
                         if path.parent.name == DIR or i.host.endswith("googleapis.com")}
    assert_accounted_for(CASES, SKIPPED, recorded_ids)


# -- the thought-signature round trip, with the adapter's own output and the engine's sealing -----
@dataclass(frozen=True)
class RoundTrip:
    cassette: str
    first: dict[str, Any]
    outputs: tuple[str, ...]  # the tool results the client sends back, one per call, in order
    normalise: tuple[Normalisation, ...]
    array: bool = False


ROUND_TRIPS = [
    pytest.param(RoundTrip("tools-thought-signatures-gemini3.yaml",
                           {"model": ALIAS, "input": [user("What is 5 times 3?")], "tools": [MULTIPLY_TOOL],
                            "stream": True}, ("15",),
                           CASES[[c.id for c in CASES].index("gemini3-result")].normalise, array=True), id="gemini3"),
    pytest.param(RoundTrip("tools-parallel-roundtrip.yaml", secrets_request(False),
                           ("Welcome to Moria!", "Life before Death"), (*PARALLEL_NORMALISE, SIGNATURE_BACK)),
                 id="parallel"),
    pytest.param(RoundTrip("tools-parallel-roundtrip-stream.yaml", secrets_request(True),
                           ("Welcome to Moria!", "Life before Death"), (*PARALLEL_NORMALISE, SIGNATURE_BACK)),
                 id="parallel-stream"),
]


@pytest.mark.parametrize("trip", ROUND_TRIPS)
async def test_thought_signatures_go_back_on_the_next_turn(trip: RoundTrip, session: aiohttp.ClientSession) -> None:
    """Turn 1's output items, sealed by the engine and replayed by the client, give exactly the
    recorded turn-2 request: the signature is back on the function call that carried it."""
    sealer = Sealer(bytes(range(32)))
    provider = GeminiProvider(session)
    first = load(f"{DIR}/{trip.cassette}", interactions=[0])
    second = load(f"{DIR}/{trip.cassette}", interactions=[1])
    if trip.array:
        first, second = _sse_recording(first), _sse_recording(second)
    deployment = _deployment(re.findall(r"/models/([^:/]+):", first.interactions[0].path)[0])
    upstream = decoded_request(trip.first, deployment)
    with replay(first):
        replies = adapt(upstream.items, upstream.tools, None, dialect="gemini", team="team-a", sealer=sealer)
        builder, _ = build(await collect(replies.replies(provider.run(upstream))))
    output = to_json(builder.resource.output)
    sealed = [item["encrypted_content"] for item in output if item["type"] == "reasoning"]
    assert len(sealed) == 1 and Sealer.is_sealed(sealed[0])
    calls = [item for item in output if item["type"] == "function_call"]
    history = [*trip.first["input"], *output,
               *(fco(c["call_id"], result) for c, result in zip(calls, trip.outputs, strict=True))]
    turn2 = decoded_request({**trip.first, "input": history}, deployment)
    adapted = adapt(turn2.items, turn2.tools, None, dialect="gemini", team="team-a", sealer=sealer)
    turn2 = msgspec.structs.replace(turn2, items=adapted.items)
    expected = second.recorded_requests[0]
    normalise(expected, trip.normalise)
    assert provider.prepare(turn2).body == expected
    with replay(second) as cassette:
        builder, _ = build(await collect(provider.run(turn2)))
    assert cassette.sent_requests[0].json()["contents"][1]["parts"][0]["thoughtSignature"] == reply_signature(
        trip.cassette, 0)
    assert builder.resource.status == "completed"


async def test_codex_custom_tool_call_keeps_its_signature(session: aiohttp.ClientSession) -> None:
    """A custom tool (Codex's apply_patch) is a function for Gemini; its call comes back as a
    custom_tool_call before the reasoning item with its signature, so the replayed history
    puts the signature back on the call (Gemini 3 refuses the call without it)."""
    sealer = Sealer(bytes(range(32)))
    tool = {"type": "custom", "name": "apply_patch", "description": "Edit files",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    first = {"model": ALIAS, "input": [user("fix it")], "tools": [tool], "stream": True}
    upstream = decoded_request(first, _deployment(FLASH3))
    reply = _reply({"functionCall": {"name": "apply_patch", "args": {"input": "*** Begin Patch"}},
                    "thoughtSignature": "SIG"}, response_id="r9")
    adapted = adapt(upstream.items, upstream.tools, None, dialect="gemini", team="t", sealer=sealer)
    upstream = msgspec.structs.replace(upstream, tools=adapted.tools)
    assert GeminiProvider(None).prepare(upstream).body["tools"] == [{"functionDeclarations": [  # type: ignore[arg-type]
        {"name": "apply_patch", "description": "Edit files\n\nThe input must follow this lark grammar:\nstart: /.+/",
         "parameters": {"type": "OBJECT", "properties": {"input": {"type": "STRING", "description": "The raw input."}},
                        "required": ["input"]}}]}]
    interaction = Interaction.make(f"{AI_STUDIO}/models/{FLASH3}:streamGenerateContent?alt=sse", body=_sse(reply))
    with replay(synthetic(interaction)):
        builder, _ = build(await collect(adapted.replies(GeminiProvider(session).run(upstream))))
    output = to_json(builder.resource.output)
    assert [item["type"] for item in output] == ["custom_tool_call", "reasoning"]
    assert (output[0]["call_id"], output[0]["input"]) == ("call_gem_r9_0", "*** Begin Patch")
    history = [user("fix it"), *output, {"type": "custom_tool_call_output", "call_id": "call_gem_r9_0",
                                         "output": "Done!"}]
    turn2 = decoded_request({**first, "input": history}, _deployment(FLASH3))
    adapted = adapt(turn2.items, turn2.tools, None, dialect="gemini", team="t", sealer=sealer)
    body = GeminiProvider(None).prepare(  # type: ignore[arg-type]  # prepare does no I/O
        msgspec.structs.replace(turn2, items=adapted.items, tools=adapted.tools)).body
    assert body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "apply_patch", "args": {"input": "*** Begin Patch"}},
                                     "thoughtSignature": "SIG"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "apply_patch", "response": {"output": "Done!"}}}]}]


# -- Vertex AI authentication ----------------------------------------------------------------------
async def test_service_account_jwt_and_token_cache(token_server: TokenServer, session: aiohttp.ClientSession) -> None:
    provider = GeminiProvider(session)
    deployment = _vertex(token_server, FLASH)
    assert await provider.access_token(deployment) == "ya29.token-1"
    assert await provider.access_token(deployment) == "ya29.token-1"  # cached
    (claims,) = token_server.assertions
    assert claims["iss"] == "gateway@p.iam.gserviceaccount.com"
    assert claims["aud"] == token_server.url
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert claims["exp"] - claims["iat"] == 3600
    # A rejected token is replaced once; a caller still holding the old one does not replace it again.
    assert await provider.access_token(deployment, rejected="ya29.token-1") == "ya29.token-2"
    assert await provider.access_token(deployment, rejected="ya29.token-1") == "ya29.token-2"
    assert token_server.issued == 2


async def test_token_is_replaced_before_it_expires(token_server: TokenServer,
                                                   session: aiohttp.ClientSession) -> None:
    now = [1_000_000.0]
    tokens = ServiceAccountTokens(token_server.service_account, token_server.url, clock=lambda: now[0])
    assert await tokens.token(session, Timeouts()) == "ya29.token-1"
    now[0] += 3599 - 300 - 1  # expires_in minus the margin, less a second
    assert await tokens.token(session, Timeouts()) == "ya29.token-1"
    now[0] += 1
    assert await tokens.token(session, Timeouts()) == "ya29.token-2"
    assert token_server.assertions[1]["iat"] == int(now[0])


async def test_vertex_request_refreshes_a_rejected_token_once(token_server: TokenServer,
                                                              session: aiohttp.ClientSession) -> None:
    """Over real sockets, against the simulator's Vertex route (which takes one bearer token)."""
    simulator = await start_simulator(options=SimulatorOptions(api_key="ya29.good"))
    try:
        provider = GeminiProvider(session)
        deployment = _vertex(token_server, "sim-model", base_url=simulator.url + "/v1")
        deployment.region, deployment.options["location"] = None, "us-central1"
        token_server.tokens = ["ya29.revoked", "ya29.good"]
        hi = decoded_request({"model": ALIAS, "input": "hi"}, deployment)
        builder, _ = build(await collect(provider.run(hi)))
        assert _summary(builder.resource) == [text("Echo: hi")]
        builder, _ = build(await collect(provider.run(decoded_request({"model": ALIAS, "input": "again",
                                                                       "stream": True}, deployment))))
        assert _summary(builder.resource) == [text("Echo: again")]
        assert token_server.issued == 2  # the refreshed token served the second request too
        async with session.get(simulator.url + "/_sim/requests") as reply:
            paths = [entry["path"] for entry in await reply.json()]
        model_path = "/v1/projects/pydantic-ai/locations/us-central1/publishers/google/models/sim-model"
        assert paths == [f"{model_path}:generateContent", f"{model_path}:generateContent",
                         f"{model_path}:streamGenerateContent"]

        token_server.tokens = ["ya29.revoked-2", "ya29.revoked-3"]
        fresh = GeminiProvider(session)
        with pytest.raises(UpstreamError) as caught:
            await collect(fresh.run(decoded_request({"model": ALIAS, "input": "hi"}, deployment)))
        assert (caught.value.code, caught.value.status, caught.value.retryable) == ("upstream_auth_failed", 502, False)
        assert token_server.issued == 4  # one refresh, not a loop
    finally:
        await simulator.close()


async def test_token_endpoint_refusal_and_bad_keys(token_server: TokenServer, rsa_key: rsa.RSAPrivateKey,
                                                   session: aiohttp.ClientSession) -> None:
    token_server.status = 400
    with pytest.raises(UpstreamError) as caught:
        await GeminiProvider(session).access_token(_vertex(token_server, FLASH))
    assert (caught.value.code, caught.value.retryable) == ("upstream_auth_failed", False)
    assert "invalid_grant" in caught.value.message and "disabled" not in caught.value.message
    token_server.status = 503
    with pytest.raises(UpstreamUnavailable):
        await GeminiProvider(session).access_token(_vertex(token_server, FLASH))
    with pytest.raises(UpstreamError, match="not a service-account JSON key"):
        ServiceAccountTokens('{"client_email": "a@b"}', token_server.url)
    ec_key = json.loads(token_server.service_account) | {"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n"}
    tokens = ServiceAccountTokens(json.dumps(ec_key), token_server.url)
    with pytest.raises(UpstreamError, match="not a PEM private key") as caught:
        await tokens.token(session, Timeouts())
    assert "nope" not in str(caught.value)


def test_vertex_urls_headers_and_express_mode(token_server: TokenServer) -> None:
    provider = GeminiProvider(None)  # type: ignore[arg-type]  # prepare does no I/O
    deployment = _vertex(token_server, FLASH, base_url="https://us-central1-aiplatform.googleapis.com/v1")
    deployment.region = "us-central1"
    deployment.options.pop("token_url")
    prepared = provider.prepare(decoded_request({"model": ALIAS, "input": "x", "stream": True,
                                                 "service_tier": "priority"}, deployment))
    assert prepared.url == ("https://us-central1-aiplatform.googleapis.com/v1/projects/pydantic-ai/locations/"
                            "us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert prepared.headers == {"X-Vertex-AI-LLM-Request-Type": "shared",
                                "X-Vertex-AI-LLM-Shared-Request-Type": "priority",
                                "Content-Type": "application/json"}
    assert "serviceTier" not in prepared.body
    express = _deployment(FLASH, base_url="https://aiplatform.googleapis.com/v1",
                          options={"platform": "vertex", "project": "p", "location": "global"})
    assert provider.prepare(decoded_request({"model": ALIAS, "input": "x"},
                                            express)).headers["x-goog-api-key"] == API_KEY
    with pytest.raises(ServerError, match=r"needs options\.project"):
        provider.prepare(decoded_request({"model": ALIAS, "input": "x"},
                                         _deployment(FLASH, options={"platform": "vertex"})))


# -- replies no recording shows (synthetic interactions) -------------------------------------------
URL = f"{AI_STUDIO}/models/{FLASH}:generateContent"
STREAM_URL = f"{AI_STUDIO}/models/{FLASH}:streamGenerateContent?alt=sse"


def _reply(*parts: dict[str, Any], finish: str | None = "STOP", usage: dict[str, Any] | None = None,
           response_id: str | None = "r1", **candidate_fields: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0, **candidate_fields}
    if finish:
        candidate["finishReason"] = finish
    reply: dict[str, Any] = {"candidates": [candidate], "modelVersion": FLASH}
    if usage is not None:
        reply["usageMetadata"] = usage
    if response_id:
        reply["responseId"] = response_id
    return reply


def _sse(*chunks: Any) -> bytes:
    return "".join(f"data: {json.dumps(c)}\r\n\r\n" if not isinstance(c, str) else c for c in chunks).encode()


async def _run_synthetic(session: aiohttp.ClientSession, interaction: Interaction, *, stream: bool = False,
                         seen: list[d.Delta] | None = None) -> list[d.Delta]:
    upstream = decoded_request({"model": ALIAS, "input": "x", "stream": stream}, _deployment(FLASH))
    deltas = seen if seen is not None else []
    with replay(synthetic(interaction)):
        async for delta in GeminiProvider(session).run(upstream):
            deltas.append(delta)
    return deltas


def _error(status: int, grpc_status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": grpc_status, "details": list(details)}}


@pytest.mark.parametrize(("status", "body", "headers", "error", "code", "retry_after"), [
    (429, _error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
                 {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                 {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}),
     {}, RateLimited, "rate_limit_exceeded", 37.0),
    (429, _error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted."), {"retry-after": "3"},
     RateLimited, "rate_limit_exceeded", 3.0),
    (503, _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), {},
     UpstreamUnavailable, "upstream_unavailable", None),
    (500, _error(500, "INTERNAL", "An internal error has occurred."), {}, UpstreamError, "upstream_error", None),
    (504, _error(504, "DEADLINE_EXCEEDED", "Deadline expired."), {}, UpstreamTimeout, "upstream_timeout", None),
    (403, _error(403, "PERMISSION_DENIED", "Generative Language API has not been used in project 1."), {},
     UpstreamError, "upstream_auth_failed", None),
    (400, _error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens "
                 "allowed (1048576)."), {}, ContextTooLong, "context_length_exceeded", None),
    (400, _error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."), {},
     InvalidRequest, "failed_precondition", None),
    (502, b"<html>bad gateway</html>", {}, UpstreamError, "upstream_error", None),
], ids=["429-retry-info", "429-retry-after", "503", "500", "504", "403", "context", "400", "non-json"])
async def test_errors_are_mapped(session: aiohttp.ClientSession, status: int, body: Any, headers: dict[str, str],
                                 error: type[GatewayError], code: str, retry_after: float | None) -> None:
    with pytest.raises(GatewayError) as caught:
        await _run_synthetic(session, Interaction.make(URL, status=status, body=body, headers=headers))
    assert (type(caught.value), caught.value.code, caught.value.retry_after) == (error, code, retry_after)


async def test_error_message_never_carries_the_key(session: aiohttp.ClientSession,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    body = _error(400, "INVALID_ARGUMENT", f"API key {API_KEY} not valid.",
                  {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"})
    with pytest.raises(UpstreamError) as caught:
        await _run_synthetic(session, Interaction.make(URL, status=400, body=body))
    assert caught.value.code == "upstream_auth_failed"
    assert API_KEY not in caught.value.message and "[redacted]" in caught.value.message
    # Nor in the raw body the debug log keeps.
    assert "API key [redacted] not valid" in caplog.text and API_KEY not in caplog.text


async def test_error_inside_the_stream(session: aiohttp.ClientSession) -> None:
    body = _sse(_reply({"text": "partial"}, finish=None), {"error": {"code": 503, "message": "overloaded",
                                                                     "status": "UNAVAILABLE"}})
    seen: list[d.Delta] = []
    with pytest.raises(UpstreamUnavailable, match="overloaded"):
        await _run_synthetic(session, Interaction.make(STREAM_URL, body=body), stream=True, seen=seen)
    assert any(isinstance(delta, d.TextDelta) and delta.text == "partial" for delta in seen)


async def test_stream_that_ends_without_a_finish_reason_fails(session: aiohttp.ClientSession) -> None:
    body = _sse(_reply({"text": "cut"}, finish=None))
    with pytest.raises(UpstreamError, match="stream ended early"):
        await _run_synthetic(session, Interaction.make(STREAM_URL, body=body), stream=True)


@pytest.mark.parametrize(("reply", "output", "incomplete"), [
    (_reply({"text": "Partial"}, finish="SAFETY"), [text("Partial")], "content_filter"),
    (_reply({"text": "Verbatim"}, finish="RECITATION"), [text("Verbatim")], "content_filter"),
    ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 7,
                                                                                 "totalTokenCount": 7}},
     [], "content_filter"),
    (_reply({"text": "fine"}, finish="FINISH_REASON_UNSPECIFIED"), [text("fine")], None),
], ids=["safety", "recitation", "prompt-blocked", "unspecified"])
async def test_finish_reasons(session: aiohttp.ClientSession, reply: dict[str, Any], output: list[Any],
                              incomplete: str | None) -> None:
    builder, events = build(await _run_synthetic(session, Interaction.make(URL, body=reply)))
    assert _summary(builder.resource) == output
    assert builder.resource.status == ("incomplete" if incomplete else "completed")
    details = builder.resource.incomplete_details
    assert (details.reason if details else None) == incomplete
    validate_stream([to_json(event) for event in events])


@pytest.mark.parametrize(("reply", "words"), [
    (_reply(finish="MALFORMED_FUNCTION_CALL", finishMessage="Malformed function call: print(x"),
     "MALFORMED_FUNCTION_CALL: Malformed function call"),
    (_reply({"text": "a"}, finish="OTHER"), "ended the turn with OTHER"),
    (_reply({"inlineData": {"mimeType": "image/png", "data": "AAAA"}}), "inlineData part"),
    (_reply({"functionCall": {"args": {}}}), "function call without a name"),
    ([_reply({"text": "a"})], "unexpected reply"),
], ids=["malformed-call", "other", "image-output", "nameless-call", "not-an-object"])
async def test_replies_that_cannot_be_a_response(session: aiohttp.ClientSession, reply: Any, words: str) -> None:
    with pytest.raises(UpstreamError, match=re.escape(words)) as caught:
        await _run_synthetic(session, Interaction.make(URL, body=reply))
    assert caught.value.retryable


async def test_usage_tiers_and_upstream_call_ids(session: aiohttp.ClientSession) -> None:
    usage = {"promptTokenCount": 100, "toolUsePromptTokenCount": 20, "cachedContentTokenCount": 64,
             "candidatesTokenCount": 10, "thoughtsTokenCount": 30, "totalTokenCount": 160, "serviceTier": "standard"}
    reply = _reply({"functionCall": {"id": "fc-7", "name": "a", "args": {"k": [1]}}},
                   {"functionCall": {"name": "b"}}, usage=usage, response_id=None)
    interaction = Interaction.make(URL, body=reply, headers={"x-gemini-service-tier": "flex"})
    builder, _ = build(await _run_synthetic(session, interaction))
    (first, second) = _summary(builder.resource)
    assert first == call("fc-7", "a", '{"k":[1]}')
    # Without a responseId the minted id is random, but the reply's calls share its stem.
    assert re.fullmatch(r"call_gem_[0-9a-f]{24}_1", second["call_id"]) and second["arguments"] == "{}"
    assert usage_tuple(builder.resource) == (120, 64, 40, 30, 160)
    assert builder.resource.service_tier == "default"  # the body's serviceTier wins over the header
    assert builder.resource.status == "completed"
    interaction = Interaction.make(URL, body=_reply({"text": "x"}), headers={"x-gemini-service-tier": "flex"})
    builder, _ = build(await _run_synthetic(session, interaction))
    assert builder.resource.service_tier == "flex"


async def test_stream_framing_thoughts_then_text_then_call(session: aiohttp.ClientSession) -> None:
    """Items open when the part kind changes; a text part after a call opens a new message; an
    empty text part adds nothing; each thought part is one summary part."""
    body = _sse(_reply({"text": "plan", "thought": True}, {"text": "more", "thought": True}, finish=None),
                ": keep-alive\r\n\r\n",
                _reply({"text": "Let me "}, finish=None), _reply({"text": "check."}, finish=None),
                _reply({"functionCall": {"name": "a", "args": {}}}, finish=None),
                _reply({"text": "Done"}, {"text": ""}, usage={"promptTokenCount": 1, "totalTokenCount": 1}))
    builder, events = build(await _run_synthetic(session, Interaction.make(STREAM_URL, body=body), stream=True))
    assert _summary(builder.resource) == [thought("plan", "more"), text("Let me check."),
                                          call("call_gem_r1_0", "a", "{}"), text("Done")]
    validate_stream([to_json(event) for event in events])


# -- thought signatures on text and thought parts ------------------------------------------------
async def test_text_thought_and_empty_part_signatures_go_back_where_they_were(
        session: aiohttp.ClientSession) -> None:
    """Positions count back from the end of the reply, so the earlier answer merged into the same
    model turn does not shift them."""
    reply = _reply({"text": "t0", "thought": True, "thoughtSignature": "SIG-T0"}, {"text": "t1", "thought": True},
                   {"text": "Hi", "thoughtSignature": "SIG-TEXT"}, {"functionCall": {"name": "a", "args": {}}},
                   {"text": "Bye"}, {"functionCall": {"name": "b", "args": {}}},
                   {"text": "", "thoughtSignature": "SIG-EMPTY"})
    builder, _ = build(await _run_synthetic(session, Interaction.make(URL, body=reply)))
    output = _summary(builder.resource)
    assert output == [thought("t0", "t1"), text("Hi"), call("call_gem_r1_0", "a", "{}"), text("Bye"),
                      call("call_gem_r1_1", "b", "{}"),
                      signatures(texts={"1": "SIG-TEXT"}, thoughts={"1": "SIG-T0"}, empty=["SIG-EMPTY"])]
    history = [user("q"), assistant("an earlier answer"), *to_json(builder.resource.output),
               fco("call_gem_r1_0", "ok"), fco("call_gem_r1_1", "ok too")]
    body = _prepare({"input": history})
    assert body["contents"][1:] == [
        {"role": "model", "parts": [{"text": "an earlier answer"},
                                    {"text": "t0", "thought": True, "thoughtSignature": "SIG-T0"},
                                    {"text": "t1", "thought": True}, {"text": "Hi", "thoughtSignature": "SIG-TEXT"},
                                    {"functionCall": {"name": "a", "args": {}}}, {"text": "Bye"},
                                    {"functionCall": {"name": "b", "args": {}}},
                                    {"text": "", "thoughtSignature": "SIG-EMPTY"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {"output": "ok"}}},
                                   {"functionResponse": {"name": "b", "response": {"output": "ok too"}}}]}]


async def test_streamed_signature_on_the_closing_empty_part_stays_with_the_message(
        session: aiohttp.ClientSession) -> None:
    body = _sse(_reply({"text": "Hel"}, finish=None), _reply({"text": "lo"}, finish=None),
                _reply({"text": "", "thoughtSignature": "SIG"}))
    builder, _ = build(await _run_synthetic(session, Interaction.make(STREAM_URL, body=body), stream=True))
    assert _summary(builder.resource) == [text("Hello"), signatures(texts={"0": "SIG"})]
    contents = _prepare({"input": [user("q"), *to_json(builder.resource.output)]})["contents"]
    assert contents[1] == {"role": "model", "parts": [{"text": "Hello", "thoughtSignature": "SIG"}]}


def test_reasoning_state_that_is_not_gemini_state_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _prepare({"input": [user("q"), {"type": "reasoning", "summary": [], "encrypted_content": "[1]"}]})
    assert caught.value.param == "input[1].encrypted_content"


# -- request translation without a recording --------------------------------------------------------
def _prepare(body: dict[str, Any], *, items: list[Item] | None = None, tools: list[Any] | None = None,
             tool_choice: Any = None, options: dict[str, str] | None = None) -> dict[str, Any]:
    upstream = decoded_request({"model": ALIAS, **body}, _deployment(FLASH, options=options or {}))
    return offline(GeminiProvider, upstream, items=items, tools=tools, tool_choice=tool_choice).body


def test_url_headers_and_query() -> None:
    deployment = _deployment(FLASH, headers={"X-Team": "research"}, query={"$alt": "x"})
    prepared = GeminiProvider(None).prepare(decoded_request(  # type: ignore[arg-type]  # prepare does no I/O
        {"model": ALIAS, "input": "x", "stream": True, "service_tier": "flex"}, deployment))
    assert prepared.url == f"{AI_STUDIO}/models/{FLASH}:streamGenerateContent?alt=sse&$alt=x"
    assert prepared.headers == {"X-Team": "research", "x-goog-api-key": API_KEY, "Content-Type": "application/json"}
    assert prepared.body["serviceTier"] == "flex"
    keyless = msgspec.structs.replace(_deployment(FLASH), api_key=None)
    prepared = GeminiProvider(None).prepare(decoded_request(  # type: ignore[arg-type]  # prepare does no I/O
        {"model": ALIAS, "input": "x", "service_tier": "default"}, keyless))
    assert prepared.headers == {"Content-Type": "application/json"} and "serviceTier" not in prepared.body


def test_system_instruction_collects_instructions_system_and_developer_messages() -> None:
    body = _prepare({"instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": "Answer in French."}, user("Hi"),
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Late rule."}]},
        assistant([{"type": "output_text", "text": "Bonjour"}, {"type": "refusal", "refusal": "Non."}]),
        assistant(""), user([{"type": "input_text", "text": "Encore"}])]})
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."},
                                                   {"text": "Late rule."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]},
                                {"role": "model", "parts": [{"text": "Bonjour"}, {"text": "Non."}]},
                                {"role": "user", "parts": [{"text": "Encore"}]}]


def test_function_results_follow_their_calls_in_call_order() -> None:
    body = _prepare({"input": [
        user("q"), fc("call_gem_r_0", "a", '{"x": 1}'), fc("call_gem_r_1", "b", ""),
        fco("call_gem_r_1", [{"type": "input_text", "text": "B"}, {"type": "input_text", "text": "!"}]),
        fco("call_gem_r_0", "A"), user("thanks"), fc("toolu_01", "a", "{}"), fco("toolu_01", "again")]})
    assert body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {"x": 1}}},
                                    {"functionCall": {"name": "b", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {"output": "A"}}},
                                   {"functionResponse": {"name": "b", "response": {"output": "B!"}}}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
        # An id this adapter did not mint (the upstream's, or another provider's) is sent back.
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}, "id": "toolu_01"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {"output": "again"},
                                                         "id": "toolu_01"}}]}]


@pytest.mark.parametrize(("items", "error", "param", "words"), [
    ([user("q"), fco("call_x", "orphan")], InvalidRequest, "input[1].call_id", "no function_call"),
    ([user("q"), fc("c", "a", "[1]")], InvalidRequest, "input[1].arguments", "JSON object"),
    ([user("q"), fc("c", "a", "{"), fco("c", "x")], InvalidRequest, "input[1].arguments", "JSON object"),
    ([user("q"), fc("c", "a", "{}"), fco("c", [{"type": "input_image", "image_url": "https://e.test/a.png"}])],
     UnsupportedFeature, "input[2].output[0]", "function_call_output"),
    ([{"type": "message", "role": "system", "content": [{"type": "input_image", "image_url": "https://e/a.png"}]}],
     UnsupportedFeature, "input[0].content[0]", "system and developer"),
    ([user([{"type": "refusal", "refusal": "no"}])], UnsupportedFeature, "input[0].content[0]", "user messages"),
    ([assistant([{"type": "input_image", "image_url": "https://e/a.png"}])], UnsupportedFeature,
     "input[0].content[0]", "assistant messages"),
], ids=["orphan-output", "array-arguments", "broken-arguments", "image-tool-output", "image-system", "user-refusal",
        "assistant-image"])
def test_conversations_gemini_cannot_take(items: list[dict[str, Any]], error: type[GatewayError], param: str,
                                          words: str) -> None:
    with pytest.raises(error) as caught:
        _prepare({"input": items})
    assert (type(caught.value), caught.value.param) == (error, param)
    assert words in caught.value.message


@pytest.mark.parametrize(("item", "param", "words"), [
    (OpaqueItem({"type": "web_search_call", "id": "ws_1"}), "input[1]", "'web_search_call'"),
    (Compaction(encrypted_content="abc"), "input[1]", "compaction"),
    (ItemReference(id="msg_1"), "input[1]", "not resolved"),
], ids=["opaque", "compaction", "item-reference"])
def test_items_outside_the_conversation_are_refused(item: Item, param: str, words: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, items=[Message(role="user", content="hi"), item])
    assert caught.value.param == param and words in caught.value.message


@pytest.mark.parametrize(("part", "expected"), [
    ({"type": "input_image", "image_url": "https://upload.wikimedia.org/a/Logo.PNG"},
     {"fileData": {"mimeType": "image/png", "fileUri": "https://upload.wikimedia.org/a/Logo.PNG"}}),
    ({"type": "input_image", "image_url": "data:image/webp;base64,UklG"},
     {"inlineData": {"mimeType": "image/webp", "data": "UklG"}}),
    ({"type": "input_file", "file_url": "gs://bucket/report.pdf"},
     {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/report.pdf"}}),
    ({"type": "input_file", "file_url": "https://generativelanguage.googleapis.com/v1beta/files/abc",
      "filename": "notes.txt"},
     {"fileData": {"mimeType": "text/plain", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}),
    ({"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"},
     {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}),
    ({"type": "input_video", "video_url": "https://example.test/clip.mp4"},
     {"fileData": {"mimeType": "video/mp4", "fileUri": "https://example.test/clip.mp4"}}),
], ids=["https-image", "data-image", "gs-pdf", "files-api-with-name", "bare-base64-file", "video"])
def test_media_parts(part: dict[str, Any], expected: dict[str, Any]) -> None:
    assert _prepare({"input": [user([part])]})["contents"][0]["parts"] == [expected]


@pytest.mark.parametrize(("part", "error", "words"), [
    ({"type": "input_image", "image_url": "https://example.test/image"}, UnsupportedFeature, "media type"),
    ({"type": "input_image", "file_id": "file_1"}, UnsupportedFeature, "file_id"),
    ({"type": "input_file", "file_id": "file_1"}, UnsupportedFeature, "file_id"),
    ({"type": "input_image", "image_url": "data:image/png,%89PNG"}, InvalidRequest, "base64"),
], ids=["unknown-type", "image-file-id", "file-file-id", "not-base64"])
def test_media_gemini_cannot_take(part: dict[str, Any], error: type[GatewayError], words: str) -> None:
    with pytest.raises(error, match=words) as caught:
        _prepare({"input": [user([part])]})
    assert caught.value.param == "input[0].content[0]"


WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}
TIME_TOOL = {"type": "function", "name": "get_time", "description": "Time", "parameters": WEATHER_SCHEMA}


@pytest.mark.parametrize(("choice", "names", "config"), [
    ("auto", ["get_weather", "get_time"], {"mode": "AUTO"}),
    ("none", ["get_weather", "get_time"], {"mode": "NONE"}),
    ("required", ["get_weather", "get_time"], {"mode": "ANY"}),
    ({"type": "function", "name": "get_time"}, ["get_weather", "get_time"],
     {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]}, ["get_time"],
     {"mode": "AUTO"}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]},
     ["get_time"], {"mode": "ANY"}),
], ids=["auto", "none", "required", "function", "allowed-auto", "allowed-required"])
def test_tool_choice(choice: Any, names: list[str], config: dict[str, Any]) -> None:
    body = _prepare({"input": "x", "tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": choice})
    assert [tool["name"] for tool in body["tools"][0]["functionDeclarations"]] == names
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_tools_that_gemini_cannot_take() -> None:
    assert "toolConfig" not in _prepare({"input": "x", "tool_choice": "none"})
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[FunctionTool(name="a"), OpaqueItem({"type": "web_search"})])
    assert (caught.value.param, "'web_search'" in caught.value.message) == ("tools[1]", True)
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[FunctionTool(name="a")], tool_choice=OpaqueItem({"type": "file_search"}))
    assert caught.value.param == "tool_choice"


def test_schemas_become_gemini_openapi_subset() -> None:
    parameters = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
        "$defs": {"Unit": {"type": "string", "enum": ["c", "f"], "description": "Unit"},
                  "Place": {"type": "object", "properties": {"city": {"type": "string", "format": "email"},
                                                             "when": {"type": "string", "format": "date-time"}},
                            "required": ["city", "ghost"]}},
        "properties": {
            "unit": {"$ref": "#/$defs/Unit", "description": "Which unit"},
            "place": {"allOf": [{"$ref": "#/$defs/Place"}], "title": "Place"},
            "note": {"type": ["string", "null"], "maxLength": 20, "default": "none"},
            "count": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "examples": [1]},
            "either": {"oneOf": [{"type": "string"}, {"type": "number", "format": "double"}]},
            "mixed": {"type": ["string", "integer"]},
            "level": {"const": 3, "description": "Level"},
            "kind": {"const": "fixed"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 1},
            "extra": {"type": "object", "properties": {}, "additionalProperties": True},
        },
        "required": ["unit", "place"],
    }
    body = _prepare({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": parameters}]})
    assert body["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "unit": {"type": "STRING", "enum": ["c", "f"], "description": "Which unit"},
            "place": {"type": "OBJECT", "title": "Place",
                      "properties": {"city": {"type": "STRING"}, "when": {"type": "STRING", "format": "date-time"}},
                      "required": ["city"]},
            "note": {"type": "STRING", "nullable": True, "maxLength": 20},
            "count": {"type": "INTEGER", "minimum": 0, "nullable": True},
            "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER", "format": "double"}]},
            "mixed": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
            "level": {"description": "Level (one of: 3)"},
            "kind": {"type": "STRING", "enum": ["fixed"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1},
            "extra": {"type": "OBJECT"},
        },
        "required": ["unit", "place"],
    }


@pytest.mark.parametrize(("parameters", "words"), [
    ({"type": "object", "properties": {"next": {"$ref": "#"}}}, "cannot be resolved"),
    ({"type": "object", "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
      "properties": {"root": {"$ref": "#/$defs/Node"}}}, "recursive"),
], ids=["unresolvable", "recursive"])
def test_schemas_gemini_cannot_take(parameters: dict[str, Any], words: str) -> None:
    with pytest.raises(UnsupportedFeature, match=words) as caught:
        _prepare({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": parameters}]})
    assert caught.value.param == "tools[0].parameters"


def test_generation_config() -> None:
    body = _prepare({"input": "x", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 64,
                     "presence_penalty": 0.5, "frequency_penalty": -0.5, "parallel_tool_calls": False,
                     "text": {"format": {"type": "json_object"}, "verbosity": "low"}, "truncation": "auto",
                     "metadata": {"a": "b"}, "store": False, "prompt_cache_key": "k", "safety_identifier": "u",
                     "top_logprobs": 0})
    assert body["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64,
                                        "presencePenalty": 0.5, "frequencyPenalty": -0.5,
                                        "responseMimeType": "application/json"}
    assert set(body) == {"contents", "generationConfig"}
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x", "top_logprobs": 2})
    assert caught.value.param == "top_logprobs"


@pytest.mark.parametrize(("reasoning", "extra", "options", "thinking"), [
    ({"effort": "high"}, {}, {}, {"thinkingBudget": 24576}),
    ({"effort": "xhigh", "summary": "detailed"}, {"max_output_tokens": 1000}, {},
     {"thinkingBudget": 500, "includeThoughts": True}),
    ({"summary": "concise"}, {}, {}, {"includeThoughts": True}),
    ({"effort": "none"}, {}, {"thinking": "level"}, {"thinkingLevel": "minimal"}),
    ({"effort": "medium", "summary": "auto"}, {}, {"thinking": "level"},
     {"thinkingLevel": "medium", "includeThoughts": True}),
], ids=["high", "clamped", "summary-only", "level-none", "level-medium"])
def test_thinking_config(reasoning: dict[str, Any], extra: dict[str, Any], options: dict[str, str],
                         thinking: dict[str, Any]) -> None:
    body = _prepare({"input": "x", "reasoning": reasoning, **extra}, options=options)
    assert body["generationConfig"]["thinkingConfig"] == thinking


def test_json_schema_output_keeps_property_order() -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["z", "a"],
              "properties": {"z": {"type": "string"},
                             "a": {"type": "object", "properties": {"only": {"type": "integer"}}}}}
    body = _prepare({"input": "x", "text": {"format": {"type": "json_schema", "name": "w", "strict": True,
                                                       "schema": schema}}})
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "required": ["z", "a"], "propertyOrdering": ["z", "a"],
        "properties": {"z": {"type": "STRING"}, "a": {"type": "OBJECT", "properties": {"only": {"type": "INTEGER"}}}}}}


# -- the simulator's Gemini dialect ------------------------------------------------------------------
async def test_simulator_checks_function_responses_and_speaks_google_errors(session: aiohttp.ClientSession) -> None:
    simulator = await start_simulator(options=SimulatorOptions(api_key="k"))
    try:
        url = f"{simulator.url}/v1beta/models/sim-model:generateContent"
        contents = [{"role": "user", "parts": [{"text": "q"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}},
                                                {"functionCall": {"name": "b", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {"output": "A"}}}]}]
        async with session.post(url, json={"contents": contents}, headers={"x-goog-api-key": "k"}) as reply:
            assert reply.status == 400
            error = (await reply.json())["error"]
        assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
        assert "number of function response parts" in error["message"]
        async with session.post(url, json={"contents": contents[:1]}, headers={"x-goog-api-key": "wrong"}) as reply:
            assert (reply.status, (await reply.json())["error"]["status"]) == (401, "UNAUTHENTICATED")
        async with session.post(url, json={"contents": contents[:1]},
                                headers={"x-goog-api-key": "k", "x-sim-fault": "status:429"}) as reply:
            error = (await reply.json())["error"]
        assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
        async with session.post(url.replace("generateContent", "countTokens"), json={"contents": contents[:1]},
                                headers={"x-goog-api-key": "k"}) as reply:
            assert reply.status == 400
    finally:
        await simulator.close()
