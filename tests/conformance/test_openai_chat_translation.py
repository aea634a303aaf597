"""Chat Completions dialect (``providers.openai_chat``) against recorded traffic.

Every interaction of every cassette in ``openai-chat/`` and ``openai-compatible/`` is either a
``Case`` below or listed in ``SKIPPED`` with its reason (``test_every_recorded_interaction_is_
accounted_for`` enforces that). A case is the Responses request a client would send for what the
recording's client sent. For each case:

1. ``prepare()`` must produce the recorded request body, except for the keys the case ignores;
   each ``Ignore`` names a path and (usually) the exact value, says why, and must match something;
2. ``run()`` replays the interaction: the body and URL aiohttp sent must be the prepared ones and
   the credential header the deployment's (``Bearer test-key``);
3. the deltas go through ``ResponseBuilder`` and the normalised output (items, call ids, names,
   arguments, usage, status, incomplete reason, service tier, upstream model) must equal what the
   recording says, the resource and every event validating against the spec; error recordings
   must map to the expected ``GatewayError`` (class, status, code, param) whose message carries no
   credential.

The case machinery is ``tests.conformance._cases``.

Expected values were read from the recorded replies by hand (long texts as prefix, suffix and
length). The feature tests at the end cover what no recording shows (quirks, refusals of
unsupported input, stream framing faults) with a synthetic recording or ``prepare`` alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from providers.openai_chat import OpenAIChatProvider
from providers.openai_chat_stream import ChatStreamDecoder
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    RateLimited,
    UnsupportedFeature,
    UpstreamError,
    UpstreamUnavailable,
)
from proxy.schema.content import InputImage
from proxy.schema.deltas import Delta
from proxy.schema.items import Compaction, Item, Message, OpaqueItem
from proxy.schema.request import FunctionTool
from proxy.schema.upstream import Deployment, Quirks
from tests.conformance import _cases
from tests.conformance._cases import (
    API_KEY,
    BOOK_JSON,
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
    fc,
    fco,
    no_error,
    offline,
    recorded,
    recorded_ids,
    replayed,
    summary,
    system,
    text,
    thought,
    user,
)
from tests.conformance.cassette import Interaction, load, replay, synthetic

DIRS = ("openai-chat", "openai-compatible")
CHAT_PATH = "/chat/completions"


# -- the vocabulary of cases ---------------------------------------------------------------------
STREAM_FALSE = Ignore("stream", "pydantic-ai sends stream:false explicitly; the adapter leaves the default out",
                      False)
N_ONE = Ignore("n", "pydantic-ai sends n:1; the adapter never sends n (one choice is the default)", 1)
SEED = Ignore("seed", "seed is not a Responses parameter")
STOP = Ignore("stop", "stop is not a Responses parameter")
ANNOTATIONS = Ignore("messages.*.annotations", "Mirascope copies the reply's empty annotations list into the "
                     "history; it is not a request field", [])
NULL_CONTENT = Ignore("messages.*.content", "Mirascope sends content:null beside tool_calls; the adapter leaves "
                      "content out, as pydantic-ai and llm do", None)
REASONING_FORMAT = Ignore("reasoning_format", "Groq-only parameter with no Responses equivalent; the host default "
                          "applies")
OPENROUTER_REASONING = Ignore("reasoning", "OpenRouter-only switch; Responses reasoning.effort maps to "
                              "reasoning_effort instead", {"enabled": True})


def refusal(value: str) -> dict[str, Any]:
    return {"type": "message", "content": [("refusal", value)]}


@dataclass(frozen=True)
class Case(_cases.Case):
    quirks: dict[str, Any] = field(default_factory=dict)
    """The deployment's ``Quirks``."""


def groq_first_answer() -> str:
    """The visible answer of groq-reasoning #0 (after its think block): the history of #1."""
    reply = load("openai-compatible/groq-reasoning.yaml", interactions=[0]).interactions[0].response_json()
    return str(reply["choices"][0]["message"]["content"]).split("</think>", 1)[1]


# -- tools, schemas and payloads seen in the recordings ----------------------------------------
def secret_tool(strict: bool) -> dict[str, Any]:
    return {"type": "function", "name": "secret_retrieval_tool",
            "description": "A tool that requires a password to retrieve a secret.",
            "parameters": {"properties": {"password": {"title": "Password", "type": "string"}},
                           "required": ["password"], "additionalProperties": False, "type": "object"},
            "strict": strict}


def weather_tool(description: str, *, strict: bool | None = None, closed: bool = True) -> dict[str, Any]:
    parameters: dict[str, Any] = {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}
    if closed:
        parameters["additionalProperties"] = False
    tool: dict[str, Any] = {"type": "function", "name": "get_weather", "description": description,
                            "parameters": parameters}
    if strict is not None:
        tool["strict"] = strict
    return tool


TIME_TOOL = {"type": "function", "name": "get_time", "description": "Get time in a timezone",
             "parameters": {"additionalProperties": False, "properties": {"timezone": {"type": "string"}},
                            "required": ["timezone"], "type": "object"}, "strict": True}
MULTIPLY_TOOL = {"type": "function", "name": "multiply", "description": "Multiply two numbers.",
                 "parameters": {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                                "required": ["a", "b"], "type": "object"}}
SOMETHING_TOOL = {"type": "function", "name": "get_something_by_name", "description": "",
                  "parameters": {"additionalProperties": False, "properties": {"name": {"type": "string"}},
                                 "required": ["name"], "type": "object"}}
BOOK_FORMAT = {"type": "json_schema", "name": "Book", "strict": True, "description": BOOK_SCHEMA["description"],
               "schema": BOOK_SCHEMA}
SECRETS_PROMPT = "Please retrieve the secrets associated with each of these passwords: mellon,radiance"
WEATHER_PROMPT = "What's the weather in Paris?"
JOKE_PROMPT = "Tell me a joke about opentelemetry"
ALFAJORES_PROMPT = "I want a recipe to cook Uruguayan alfajores."
GROQ_TOOL_PROMPT = ('Please call the "get_something_by_name" tool with non-existent parameters to test error '
                    "handling; on the second try you can use valid args")
MELLON, RADIANCE = '{"password": "mellon"}', '{"password": "radiance"}'


def secrets_request(strict: bool, stream: bool, calls: tuple[str, str] | None = None) -> dict[str, Any]:
    items: list[dict[str, Any]] = [system("Use parallel tool calling."), user(SECRETS_PROMPT)]
    if calls is not None:
        items += [fc(calls[0], "secret_retrieval_tool", MELLON), fc(calls[1], "secret_retrieval_tool", RADIANCE),
                  fco(calls[0], "Welcome to Moria!"), fco(calls[1], "Life before Death")]
    return {"model": "team-model", "input": items, "tools": [secret_tool(strict)], "stream": stream}


def secrets_calls(first: str, second: str) -> Outcome:
    return Outcome([call(first, "secret_retrieval_tool", MELLON), call(second, "secret_retrieval_tool", RADIANCE)],
                   (75, 0, 53, 0, 128), "gpt-4o-2024-08-06")


GPT4O = "gpt-4o-2024-08-06"
GPT5_MINI = "gpt-5-mini-2025-08-07"
SCOUT = "meta-llama/llama-4-scout-17b-16e-instruct"
OSS = "openai/gpt-oss-120b"
R1 = "deepseek-r1-distill-llama-70b"

CASES: list[Case] = [
    # ---------------------------------------------------------------- openai-chat, plain text
    Case("text-nonstream", "openai-chat/text-nonstream.yaml", 0,
         {"model": "team-model", "input": "What is 4200 + 42?"},
         Outcome([text("\\(4200 + 42 = 4242\\).")], (16, 0, 12, 0, 28), GPT4O)),
    Case("text-stream", "openai-chat/text-stream.yaml", 0,
         {"model": "team-model", "input": "What is 4200 + 42?", "stream": True},
         Outcome([text("4200 + 42 equals 4242.")], (16, 0, 10, 0, 26), GPT4O)),
    Case("finish-length", "openai-chat/finish-length.yaml", 0,
         {"model": "team-model", "input": "List all U.S. states.", "max_output_tokens": 50},
         Outcome([text("Certainly! Here is a list of all 50 U.S. states:\n\n1. Alabama\n2. Alaska\n3. Arizona\n"
                       "4. Arkansas\n5. California\n6. Colorado\n7. Connecticut\n8. Delaware\n9. Florida")],
                 (14, 0, 50, 0, 64), GPT4O, incomplete="max_output_tokens"),
         quirks={"max_tokens_field": "max_tokens"}),
    Case("sampling-params-stop", "openai-chat/sampling-params-stop.yaml", 0,
         {"model": "team-model", "input": "What is 4200 + 42?", "max_output_tokens": 500, "temperature": 0.7,
          "top_p": 0.3},
         Outcome([text("4200 + 42 equals ")], (16, 0, 9, 0, 25), GPT4O),
         normalise=(SEED, STOP), quirks={"max_tokens_field": "max_tokens"}),
    Case("gpt5-unsupported-stop", "openai-chat/max-tokens-gpt5-400-then-retry.yaml", 0,
         {"model": "team-model", "input": "What is 4200 + 42?", "max_output_tokens": 500},
         Failure(InvalidRequest, 400, "unsupported_parameter", "'stop' is not supported", param=None),
         normalise=(SEED, STOP)),
    Case("gpt5-max-completion-tokens", "openai-chat/max-tokens-gpt5-400-then-retry.yaml", 1,
         {"model": "team-model", "input": "What is 4200 + 42?", "max_output_tokens": 500},
         Outcome([text("4242")], (15, 0, 11, 0, 26), GPT5_MINI), normalise=(SEED,)),
    # ---------------------------------------------------------------- input parts
    Case("input-image-url", "openai-chat/input-image-url.yaml", 0,
         {"model": "team-model", "input": [user([
             {"type": "input_text", "text": "Describe the following image in one sentence"},
             {"type": "input_image", "image_url": "https://en.wikipedia.org/static/images/icons/wikipedia.png"}])]},
         Outcome([text("The image shows the Wikipedia logo, which is a globe constructed from puzzle pieces "
                       "featuring various characters from different writing systems.")], (269, 0, 23, 0, 292), GPT4O)),
    Case("input-file-pdf-base64", "openai-chat/input-file-pdf-base64.yaml", 0,
         lambda: {"model": "team-model", "input": [user([
             {"type": "input_text", "text": "What text is in this PDF document? Reply in one short sentence."},
             {"type": "input_file", "filename": "document.pdf",
              "file_data": recorded("openai-chat/input-file-pdf-base64.yaml", 0,
                                    "messages", 0, "content", 1, "file", "file_data")}])]},
         Outcome([text('The text in the PDF document is "Hello, world!"')], (241, 0, 12, 0, 253), GPT4O)),
    # ---------------------------------------------------------------- structured output, refusal
    Case("json-schema-strict", "openai-chat/json-schema-strict.yaml", 0,
         {"model": "team-model", "input": "Please recommend the most popular book by Patrick Rothfuss",
          "text": {"format": BOOK_FORMAT}},
         Outcome([text(BOOK_JSON)], (172, 0, 29, 0, 201), GPT4O)),
    Case("json-schema-strict-stream", "openai-chat/json-schema-strict-stream.yaml", 0,
         {"model": "team-model", "input": "Please recommend the most popular book by Patrick Rothfuss",
          "text": {"format": BOOK_FORMAT}, "stream": True},
         Outcome([text(BOOK_JSON)], (172, 0, 29, 0, 201), GPT4O)),
    Case("refusal", "openai-chat/refusal.yaml", 0,
         {"model": "team-model", "input": "Provide detailed instructions for synthesizing fentanyl.",
          "text": {"format": {"type": "json_schema", "name": "FentanylHandbook", "strict": True, "schema": {
              "properties": {"instructions": {"title": "Instructions", "type": "string"}},
              "required": ["instructions"], "title": "FentanylHandbook", "type": "object",
              "additionalProperties": False}}}},
         Outcome([refusal("I'm very sorry, but I can't assist with that request.")], (64, 0, 13, 0, 77), GPT4O)),
    # ---------------------------------------------------------------- tool choice
    Case("tool-choice-none", "openai-chat/tool-choice-none.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "none",
          "tools": [weather_tool("Get the current weather for a city.", strict=True)]},
         Outcome([text(Long("I can't fetch live weather data right now. Do you ",
                            " or a detailed typical forecast for specific days.", 805))],
                 (132, 0, 589, 384, 721), GPT5_MINI),
         normalise=(STREAM_FALSE,)),
    Case("tool-choice-required", "openai-chat/tool-choice-required.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "required",
          "tools": [weather_tool("Get weather for a city", strict=True)]},
         Outcome([call("call_injwxidE5XUzmiKVfOH3rxf2", "get_weather", '{"city":"Paris"}')],
                 (130, 0, 87, 64, 217), GPT5_MINI),
         normalise=(STREAM_FALSE,)),
    Case("tool-choice-specific", "openai-chat/tool-choice-specific.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)],
          "tool_choice": {"type": "function", "name": "get_weather"},
          "tools": [weather_tool("Get weather for a city", strict=True), TIME_TOOL]},
         Outcome([call("call_ZRDY1xLOEab4YUsDuuJMA1tF", "get_weather", '{"city":"Paris"}')],
                 (150, 0, 23, 0, 173), GPT5_MINI),
         normalise=(STREAM_FALSE,)),
    # ---------------------------------------------------------------- tool round trips
    Case("tools-parallel-call", "openai-chat/tools-parallel-roundtrip.yaml", 0, secrets_request(False, False),
         secrets_calls("call_v6LacIrChvs6ITVpIZqy5tFc", "call_onyWzk4mLTGKzW9cthmf4Llq")),
    Case("tools-parallel-results", "openai-chat/tools-parallel-roundtrip.yaml", 1,
         secrets_request(False, False, ("call_v6LacIrChvs6ITVpIZqy5tFc", "call_onyWzk4mLTGKzW9cthmf4Llq")),
         Outcome([text('The secrets associated with the passwords are as follows:\n- For "mellon": Welcome to '
                       'Moria!\n- For "radiance": Life before Death')], (149, 0, 32, 0, 181), GPT4O),
         normalise=(ANNOTATIONS,)),
    Case("tools-parallel-call-strict", "openai-chat/tools-parallel-roundtrip.yaml", 2, secrets_request(True, False),
         secrets_calls("call_kORjJVpmh91BGUtfuEyWTNHq", "call_rwWftDkV0SjAa03c30QMCbHv")),
    Case("tools-parallel-results-strict", "openai-chat/tools-parallel-roundtrip.yaml", 3,
         secrets_request(True, False, ("call_kORjJVpmh91BGUtfuEyWTNHq", "call_rwWftDkV0SjAa03c30QMCbHv")),
         Outcome([text('Here are the secrets associated with the passwords you provided:\n\n- For "mellon": '
                       '"Welcome to Moria!"\n- For "radiance": "Life before Death"')], (149, 0, 36, 0, 185), GPT4O),
         normalise=(ANNOTATIONS,)),
    Case("tools-parallel-call-stream", "openai-chat/tools-parallel-roundtrip-stream.yaml", 0,
         secrets_request(False, True), secrets_calls("call_M26z19sncd7b4LBgzKRRbaUE", "call_KPXe5NX7IcKkaBUhc6dto2QV")),
    Case("tools-parallel-results-stream", "openai-chat/tools-parallel-roundtrip-stream.yaml", 1,
         secrets_request(False, True, ("call_M26z19sncd7b4LBgzKRRbaUE", "call_KPXe5NX7IcKkaBUhc6dto2QV")),
         Outcome([text('The secrets associated with the passwords are:\n\n- "mellon": Welcome to Moria!\n'
                       '- "radiance": Life before Death')], (149, 0, 28, 0, 177), GPT4O),
         normalise=(NULL_CONTENT,)),
    Case("tools-parallel-call-strict-stream", "openai-chat/tools-parallel-roundtrip-stream.yaml", 2,
         secrets_request(True, True), secrets_calls("call_NnkmjbtYL9gdZnGOMxYEl0A3", "call_uvC42eCVUOg2Y35G9FQKjAOB")),
    Case("tools-parallel-results-strict-stream", "openai-chat/tools-parallel-roundtrip-stream.yaml", 3,
         secrets_request(True, True, ("call_NnkmjbtYL9gdZnGOMxYEl0A3", "call_uvC42eCVUOg2Y35G9FQKjAOB")),
         Outcome([text('The secrets associated with the passwords are as follows:\n\n- "mellon": Welcome to '
                       'Moria!\n- "radiance": Life before Death')], (149, 0, 30, 0, 179), GPT4O),
         normalise=(NULL_CONTENT,)),
    Case("tool-stream-single-call", "openai-chat/tool-stream-single.yaml", 0,
         {"model": "team-model", "input": [user("What is 1231 * 2331?")], "tools": [MULTIPLY_TOOL], "stream": True},
         Outcome([call("call_1EYWDzueHEp8OsB8jJSEp7WB", "multiply", '{"a":1231,"b":2331}')],
                 (54, 0, 20, 0, 74), "gpt-4o-mini-2024-07-18")),
    Case("tool-stream-single-result", "openai-chat/tool-stream-single.yaml", 1,
         {"model": "team-model", "tools": [MULTIPLY_TOOL], "stream": True, "input": [
             user("What is 1231 * 2331?"), assistant(""),
             fc("call_1EYWDzueHEp8OsB8jJSEp7WB", "multiply", '{"a": 1231, "b": 2331}'),
             fco("call_1EYWDzueHEp8OsB8jJSEp7WB", "2869461")]},
         Outcome([text("The result of \\( 1231 \\times 2331 \\) is \\( 2,869,461 \\).")],
                 (87, 0, 26, 0, 113), "gpt-4o-mini-2024-07-18")),
    # ---------------------------------------------------------------- openai-chat errors
    Case("developer-role-rejected", "openai-chat/error-400-developer-role-unsupported.yaml", 0,
         {"model": "team-model", "input": [{"type": "message", "role": "developer",
                                            "content": "You are a helpful assistant."}, user("Hello")]},
         Failure(InvalidRequest, 400, "unsupported_value", "does not support 'developer'", param=None),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("invalid-key", "openai-chat/error-401-invalid-key.yaml", 0,
         {"model": "team-model", "input": "This should fail with AuthenticationError"},
         Failure(UpstreamError, 502, "upstream_auth_failed", "refused the gateway's credentials")),
    Case("model-not-found", "openai-chat/error-404-model-not-found.yaml", 0,
         {"model": "team-model", "input": "This should fail with NotFoundError"},
         Failure(InvalidRequest, 400, "model_not_found", "does not exist", param="model")),
    # ---------------------------------------------------------------- Groq
    Case("groq-text-nonstream", "openai-compatible/groq-text-nonstream.yaml", 0,
         {"model": "team-model", "input": [user(JOKE_PROMPT)]},
         Outcome([text("Here's a joke about OpenTelemetry:\n\nWhy did OpenTelemetry go to the doctor?\n\nBecause it "
                       'was feeling a little "lost in the traces"!\n\nI hope that brings a trace to your eye!')],
                 (18, 0, 43, 0, 61), "llama3-8b-8192")),
    Case("groq-text-stream-x-groq-usage", "openai-compatible/groq-text-stream.yaml", 0,
         {"model": "team-model", "input": [user(JOKE_PROMPT)], "stream": True},
         Outcome([text(Long("A joke about OpenTelemetry!\n\nWhy did the OpenTelemetry Span go to therapy?",
                            'I hope it "exposes" a smile on your face!)', 277))],
                 (18, 0, 73, 0, 91), "llama3-8b-8192"),
         quirks={"stream_usage": False}),
    Case("groq-json-schema", "openai-compatible/groq-json-schema.yaml", 0,
         {"model": "team-model", "input": [user("What is the largest city in Mexico?")],
          "text": {"format": {"type": "json_schema", "name": "CityLocation", "strict": True,
                              "description": "A city and its country.",
                              "schema": {"additionalProperties": False, "type": "object",
                                         "required": ["city", "country"],
                                         "properties": {"city": {"type": "string"}, "country": {"type": "string"}}}}}},
         Outcome([thought(Long('The user asks: "What is the largest city in Mexico',
                               'untry":"Mexico"} in compact format, no extra text.', 319)),
                  text('{"city":"Mexico City","country":"Mexico"}')], (178, 0, 94, 0, 272), OSS, "on_demand"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-tool-choice-none", "openai-compatible/groq-tool-choice-none.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "none",
          "tools": [weather_tool("Get the current weather for a city.")]},
         Outcome([text(Long("I'm not able to provide real-time information abou",
                            "out Paris or its climate, I'll do my best to help!", 1115))],
                 (16, 0, 218, 0, 234), SCOUT, "on_demand"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-tool-choice-required", "openai-compatible/groq-tool-choice-required.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "required",
          "tools": [weather_tool("Get weather for a city", closed=False)]},
         Outcome([call("4s8mdrtvv", "get_weather", '{"city":"Paris"}')], (723, 0, 29, 0, 752), SCOUT, "on_demand"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-tool-call", "openai-compatible/groq-tool-roundtrip.yaml", 0,
         {"model": "team-model", "input": [user(WEATHER_PROMPT)], "tool_choice": "auto",
          "tools": [weather_tool("Get the current weather for a city.")]},
         Outcome([call("48f5r72yf", "get_weather", '{"city":"Paris"}')], (717, 0, 29, 0, 746), SCOUT, "on_demand"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-tool-result", "openai-compatible/groq-tool-roundtrip.yaml", 1,
         {"model": "team-model", "tool_choice": "auto", "tools": [weather_tool("Get the current weather for a city.")],
          "input": [user(WEATHER_PROMPT), fc("48f5r72yf", "get_weather", '{"city":"Paris"}'),
                    fco("48f5r72yf", "Sunny, 22C in Paris")]},
         Outcome([text("The weather in Paris is sunny with a temperature of 22C.")], (774, 0, 15, 0, 789), SCOUT,
                 "on_demand"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-tool-use-failed", "openai-compatible/groq-error-400-tool-use-failed.yaml", 0,
         {"model": "team-model", "instructions": "Be concise. Never use pretty double quotes, just regular ones.",
          "input": [user(GROQ_TOOL_PROMPT)], "tool_choice": "auto", "tools": [SOMETHING_TOOL]},
         Failure(InvalidRequest, 400, "tool_use_failed", "did not match schema"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-tool-retry-with-reasoning", "openai-compatible/groq-error-400-tool-use-failed.yaml", 1,
         lambda: {"model": "team-model",
                  "instructions": "Be concise. Never use pretty double quotes, just regular ones.",
                  "tool_choice": "auto", "tools": [SOMETHING_TOOL], "input": [
                      user(GROQ_TOOL_PROMPT),
                      fc("pyd_ai_445dbde6c4764cafb5782bb928ef6c2c", "get_something_by_name", '{"foo":"bar"}'),
                      fco("pyd_ai_445dbde6c4764cafb5782bb928ef6c2c", recorded(
                          "openai-compatible/groq-error-400-tool-use-failed.yaml", 1, "messages", 3, "content"))]},
         Outcome([thought('We need to call with correct param: name field. Use some name, e.g., "test".'),
                  call("fc_311ba17b-89f9-48d3-8fd9-7e74a1264855", "get_something_by_name", '{"name":"test"}')],
                 (301, 0, 52, 22, 353), OSS, "on_demand"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-model-not-found", "openai-compatible/groq-error-404.yaml", 0,
         {"model": "team-model", "input": [user("hello")]},
         Failure(InvalidRequest, 400, "model_not_found", "does not exist", param="model"),
         normalise=(N_ONE, STREAM_FALSE)),
    Case("groq-reasoning-raw", "openai-compatible/groq-reasoning.yaml", 0,
         {"model": "team-model", "instructions": "You are a chef.", "input": [user(ALFAJORES_PROMPT)]},
         Outcome([text(Long("<think>\nOkay, so I want to make Uruguayan alfajore",
                            "l Uruguayan alfajores with a cup of coffee or tea!", 5980))],
                 (21, 0, 1414, 0, 1435), R1),
         normalise=(N_ONE, STREAM_FALSE, REASONING_FORMAT)),
    Case("groq-reasoning-parsed", "openai-compatible/groq-reasoning.yaml", 1,
         lambda: {"model": "team-model", "input": [
             system("You are a chef."), user(ALFAJORES_PROMPT), assistant(groq_first_answer()),
             user("Considering the Uruguayan recipe, how can I cook the Argentinian one?")]},
         Outcome([thought(Long("Alright, so I want to make Argentinian alfajores a",
                               "essence of this traditional South American treat.\n", 3722)),
                  text(Long("To create authentic Argentinian alfajores, follow ",
                            "d traditions of this beloved South American treat.", 3469))],
                 (524, 0, 1590, 0, 2114), R1),
         normalise=(N_ONE, STREAM_FALSE, REASONING_FORMAT)),
    # ---------------------------------------------------------------- OpenRouter
    Case("openrouter-reasoning-stream", "openai-compatible/openrouter-reasoning-stream.yaml", 0,
         {"model": "team-model", "input": [user("What is 2+2?")], "stream": True},
         Outcome([thought("This is a simple arithmetic question. 2+2 equals 4."), text("2 + 2 = 4")],
                 (43, 0, 36, 13, 79), "anthropic/claude-sonnet-4.5"),
         normalise=(OPENROUTER_REASONING,)),
    Case("openrouter-rate-limited", "openai-compatible/openrouter-error-429.yaml", 0,
         {"model": "team-model", "instructions": "Be helpful.", "input": [user("Tell me a joke.")]},
         Failure(RateLimited, 429, "rate_limit_exceeded", "Provider returned error", retryable=True),
         normalise=(STREAM_FALSE,)),
]

# Interactions not replayed as cases, with the reason. Each becomes a skipped test so the report
# lists it; test_every_recorded_interaction_is_accounted_for keeps this list complete.
SKIPPED: dict[tuple[str, int], str] = {
    ("openai-compatible/groq-error-400-tool-use-failed.yaml", 2):
        "not expressible: pydantic-ai replays its reasoning as '<think>' text in the same assistant message as "
        "the tool call; Responses holds a reasoning item (which Chat cannot take back) and a function_call",
    ("openai-chat/error-404-model-not-found.yaml", 1): "client retry: same request and reply as #0",
    ("openai-chat/tools-parallel-roundtrip.yaml", 4): "second run of #2 (same request, other call ids)",
    ("openai-chat/tools-parallel-roundtrip.yaml", 5): "second run of #3 (same request, other call ids)",
    ("openai-chat/tools-parallel-roundtrip-stream.yaml", 4): "second run of #2 (same request, other call ids)",
    ("openai-chat/tools-parallel-roundtrip-stream.yaml", 5): "second run of #3 (same request, other call ids)",
    **{("openai-compatible/groq-text-nonstream.yaml", n): "same request as #0, recorded again" for n in range(1, 6)},
    **{("openai-compatible/openrouter-error-429.yaml", n): "client retry: same request and reply as #0"
       for n in (1, 2)},
}


def _deployment(base_url: str, model: str, **overrides: Any) -> Deployment:
    quirks = Quirks(**overrides.pop("quirks", {}))
    return Deployment(name="test", provider="test-host", dialect="openai_chat", base_url=base_url, model=model,
                      api_key=API_KEY, quirks=quirks, **overrides)


# -- the recorded cases ------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CASES, SKIPPED))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording = load(case.cassette, interactions=[case.interaction])
    interaction = recording.interactions[0]
    assert interaction.path.endswith(CHAT_PATH)
    url = interaction.uri.split("#")[0]
    deployment = _deployment(url.removesuffix(CHAT_PATH), recording.recorded_requests[0]["model"],
                             quirks=case.quirks)
    request = converted_request(case.body(), deployment)
    provider = OpenAIChatProvider(session)
    await check_case(case, recording, provider.prepare(request), provider.run(request), url=url,
                     headers={"Authorization": f"Bearer {API_KEY}"}, pieces=1 if request.stream else 0)


def test_every_recorded_interaction_is_accounted_for() -> None:
    assert_accounted_for(CASES, SKIPPED, recorded_ids(DIRS[0]) | recorded_ids(DIRS[1]))


# -- authentication and deployment data --------------------------------------------------------
async def test_api_key_auth_style_sends_api_key_header(session: aiohttp.ClientSession) -> None:
    deployment = _deployment("https://api.openai.com/v1", "gpt-4o", auth="api-key",
                             query={"api-version": "2024-10-21"}, headers={"X-Team": "research"})
    request = converted_request({"model": "team-model", "input": "What is 4200 + 42?"}, deployment)
    provider = OpenAIChatProvider(session)
    prepared = provider.prepare(request)
    assert prepared.url == "https://api.openai.com/v1/chat/completions?api-version=2024-10-21"
    with replay("openai-chat/text-nonstream.yaml") as cassette:
        deltas = await collect(provider.run(request))
    sent = cassette.sent_requests[0]
    assert sent.url == prepared.url
    assert sent.header("api-key") == API_KEY
    assert sent.header("Authorization") is None
    assert sent.header("X-Team") == "research"
    assert sent.json() == cassette.recorded_requests[0]
    assert summary(build(deltas)[0].resource) == [text("\\(4200 + 42 = 4242\\).")]


# -- request translation without a recording ---------------------------------------------------
def _prepare(body: dict[str, Any], *, items: list[Item] | None = None, tools: list[Any] | None = None,
             tool_choice: Any = None, stream: bool = False, **quirks: Any) -> dict[str, Any]:
    request = converted_request({"model": "team-model", **body},
                                _deployment("https://example.test/v1", "m", quirks=quirks))
    prepared = offline(OpenAIChatProvider, request, items=items, tools=tools, tool_choice=tool_choice, stream=stream)
    assert prepared.url == "https://example.test/v1/chat/completions"
    return prepared.body


def test_roles_instructions_and_developer_quirk() -> None:
    body = {"instructions": "Be brief.", "input": [
        {"type": "message", "role": "developer", "content": "Answer in French."}, user("Hi"),
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Late rule."}]}]}
    assert _prepare(body)["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hi"}, {"role": "system", "content": [{"type": "text", "text": "Late rule."}]}]
    assert _prepare(body, developer_role=False)["messages"][1] == {"role": "system", "content": "Answer in French."}


def test_history_groups_calls_drops_reasoning_and_joins_assistant_parts() -> None:
    body = {"input": [
        user("q"),
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}], "encrypted_content": "x"},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Let me "}, {"type": "output_text", "text": "check."}]},
        fc("c1", "a", "{}"), fc("c2", "b", '{"x":1}'),
        fco("c1", "one"), fco("c2", [{"type": "input_text", "text": "two"}]),
        assistant([{"type": "refusal", "refusal": "No."}])]}
    assert _prepare(body)["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "No."}]


@pytest.mark.parametrize(("items", "param", "words"), [
    ([Message(role="user", content="hi"), OpaqueItem({"type": "web_search_call", "id": "ws_1"})],
     "input[1]", "'web_search_call'"),
    ([Compaction(encrypted_content="abc")], "input[0]", "compaction"),
    ([Message(role="user", content=[InputImage(file_id="file_1")])], "input[0].content[0]", "file_id"),
], ids=["opaque-item", "compaction", "image-file-id"])
def test_unsupported_items_are_refused_with_their_position(items: list[Item], param: str, words: str) -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, items=items)
    assert caught.value.param == param
    assert words in caught.value.message
    assert caught.value.status == 400


def test_input_file_by_url_is_refused() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": [user([{"type": "input_file", "file_url": "https://example.test/a.pdf"}])]})
    assert caught.value.param == "input[0].content[0]"


def test_non_function_tools_and_tool_choices_are_refused() -> None:
    weather = FunctionTool(name="get_weather")
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[weather, OpaqueItem({"type": "web_search"})])
    assert (caught.value.param, "'web_search'" in caught.value.message) == ("tools[1]", True)
    with pytest.raises(UnsupportedFeature) as caught:
        _prepare({"input": "x"}, tools=[weather], tool_choice=OpaqueItem({"type": "file_search"}))
    assert caught.value.param == "tool_choice"


def test_tool_choice_allowed_tools_and_function() -> None:
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b", "description": None}]
    allowed = _prepare({"input": "x", "tools": tools, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}})
    assert allowed["tools"] == [{"type": "function", "function": {"name": "a"}},
                                {"type": "function", "function": {"name": "b"}}]
    assert allowed["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "b"}}]}}
    named = _prepare({"input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "a"}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "a"}}


def test_parameters_mapping() -> None:
    body = _prepare({"input": "x", "reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 64,
                     "temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": -0.5,
                     "parallel_tool_calls": False, "top_logprobs": 3, "safety_identifier": "user-1",
                     "prompt_cache_key": "k1", "service_tier": "flex", "metadata": {"a": "b"}, "store": True,
                     "text": {"format": {"type": "json_object"}, "verbosity": "low"}, "truncation": "auto"})
    assert body == {"messages": [{"role": "user", "content": "x"}], "model": "m", "reasoning_effort": "low",
                    "max_completion_tokens": 64, "temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.5,
                    "frequency_penalty": -0.5, "parallel_tool_calls": False, "logprobs": True, "top_logprobs": 3,
                    "safety_identifier": "user-1", "prompt_cache_key": "k1", "service_tier": "flex",
                    "response_format": {"type": "json_object"}, "verbosity": "low"}


def test_parameter_quirks() -> None:
    body = _prepare({"input": "x", "reasoning": {"effort": "high"}, "temperature": 0.2, "top_p": 0.9,
                     "max_output_tokens": 64, "service_tier": "auto", "text": {"format": {"type": "text"}}},
                    stream=True, reasoning_effort=False, sampling_params=False, max_tokens_field="max_tokens",
                    stream_usage=False)
    assert body == {"messages": [{"role": "user", "content": "x"}], "model": "m", "max_tokens": 64, "stream": True}
    assert _prepare({"input": "x"}, stream=True)["stream_options"] == {"include_usage": True}


# -- replies without a recording (synthetic interactions) --------------------------------------
URL = "https://example.test/v1/chat/completions"


def _sse(*chunks: Any, done: bool = True) -> bytes:
    frames = [f"data: {json.dumps(c)}\n\n" if not isinstance(c, str) else c for c in chunks]
    return ("".join(frames) + ("data: [DONE]\n\n" if done else "")).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def _run_synthetic(session: aiohttp.ClientSession, interaction: Interaction,
                         stream: bool = True) -> list[Delta]:
    request = converted_request({"model": "team-model", "input": "x", "stream": stream},
                                _deployment("https://example.test/v1", "m"))
    return await replayed(OpenAIChatProvider(session).run(request), interaction)


async def test_tool_call_fragments_null_arguments_and_resent_arguments(session: aiohttp.ClientSession) -> None:
    body = _sse(
        _chunk({"role": "assistant", "content": None}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "a", "arguments": None}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "b", "arguments": '{"x":'}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": "1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"x":1}'}}]}),  # resent in full
        _chunk({}, "tool_calls"))
    builder, _ = build(await _run_synthetic(session, Interaction.make(URL, body=body)))
    assert summary(builder.resource) == [call("call_a", "a", "{}"), call("call_b", "b", '{"x":1}')]


async def test_reasoning_after_text_opens_a_new_item(session: aiohttp.ClientSession) -> None:
    body = _sse(_chunk({"reasoning": "think"}), _chunk({"content": "Hel"}), _chunk({"content": "lo"}),
                _chunk({"reasoning": "more"}), _chunk({"content": "!"}, "stop"), ": keep-alive\n\n")
    builder, _ = build(await _run_synthetic(session, Interaction.make(URL, body=body)))
    assert summary(builder.resource) == [thought("think"), text("Hello"), thought("more"), text("!")]
    assert builder.resource.usage is not None and builder.resource.usage.total_tokens == 0


@pytest.mark.parametrize(("frame", "error", "status", "code"), [
    ('event: error\ndata: {"error": {"message": "Tool call validation failed", "type": "invalid_request_error", '
     '"code": "tool_use_failed", "failed_generation": "{\\"secret\\": 1}"}}\n\n',
     InvalidRequest, 400, "tool_use_failed"),
    ('data: {"error": {"code": 502, "message": "Provider disconnected"}}\n\n', UpstreamError, 502, "upstream_error"),
])
async def test_errors_after_the_stream_started(session: aiohttp.ClientSession, frame: str,
                                               error: type[GatewayError], status: int, code: str) -> None:
    body = _sse(_chunk({"content": "partial"}), frame, done=False)
    request = converted_request({"model": "team-model", "input": "x", "stream": True},
                        _deployment("https://example.test/v1", "m"))
    seen: list[Delta] = []
    with replay(synthetic(Interaction.make(URL, body=body))), pytest.raises(GatewayError) as caught:
        async for delta in OpenAIChatProvider(session).run(request):
            seen.append(delta)
    assert any(getattr(delta, "text", None) == "partial" for delta in seen)
    assert (type(caught.value), caught.value.status, caught.value.code) == (error, status, code)
    assert "secret" not in caught.value.message


async def test_stream_that_ends_without_finish_reason_fails(session: aiohttp.ClientSession) -> None:
    body = _sse(_chunk({"content": "cut"}), done=False)
    with pytest.raises(UpstreamError, match="stream ended early"):
        await _run_synthetic(session, Interaction.make(URL, body=body))


async def test_retry_after_and_unavailable(session: aiohttp.ClientSession) -> None:
    interaction = Interaction.make(URL, status=503, headers={"retry-after": "7", "Content-Type": "application/json"},
                                   body={"error": {"message": "overloaded", "type": "server_error"}})
    with pytest.raises(UpstreamUnavailable) as caught:
        await _run_synthetic(session, interaction, stream=False)
    assert (caught.value.retry_after, caught.value.retryable) == (7.0, True)


async def test_context_too_long_and_error_body_with_200(session: aiohttp.ClientSession) -> None:
    too_long = Interaction.make(URL, status=400, body={"error": {
        "message": "maximum context length is 8192 tokens", "code": "context_length_exceeded", "param": "messages"}})
    with pytest.raises(ContextTooLong):
        await _run_synthetic(session, too_long, stream=False)
    error_200 = Interaction.make(URL, body={"error": {"message": "upstream says no", "code": 429}})
    with pytest.raises(RateLimited):
        await _run_synthetic(session, error_200, stream=False)


def test_stream_decoder_rejects_interleaved_tool_fragments() -> None:
    def frame(fragment: dict[str, Any]) -> bytes:
        return json.dumps(_chunk({"tool_calls": [fragment]})).encode()

    decoder = ChatStreamDecoder("test-host", no_error)
    decoder.feed(None, frame({"index": 0, "id": "a", "function": {"name": "a"}}))
    decoder.feed(None, frame({"index": 1, "id": "b", "function": {"name": "b"}}))
    with pytest.raises(UpstreamError, match="interleaved"):
        decoder.feed(None, frame({"index": 0, "function": {"arguments": "{}"}}))


# -- the replay helper itself ------------------------------------------------------------------
async def test_replay_fails_when_an_interaction_is_left_unplayed(session: aiohttp.ClientSession) -> None:
    request = converted_request({"model": "team-model", "input": "x"},
                                _deployment("https://api.groq.com/openai/v1", "m"))
    with pytest.raises(AssertionError, match=r"not played: #1 POST"), \
            replay("openai-compatible/groq-text-nonstream.yaml", interactions=[0, 1]):
        await collect(OpenAIChatProvider(session).run(request))


def test_load_normalises_gzip_and_parsed_bodies_and_selects_hosts() -> None:
    gzipped = load("openai-chat/text-nonstream.yaml").interactions[0]
    assert gzipped.response_json()["usage"]["total_tokens"] == 28
    assert not any(k.lower() == "content-encoding" for k in gzipped.response_headers)
    parsed = load("openai-chat/tool-choice-none.yaml")
    assert parsed.format == "pydantic-ai" and parsed.recorded_requests[0]["tool_choice"] == "none"
    assert [i.index for i in load("openai-responses/multi-turn-history.yaml", only_host="api.openai.com")
            .interactions] == [1]
    with pytest.raises(ValueError, match="empty"):
        load("openai-chat/text-nonstream.yaml", only_host="api.groq.com")
