"""OpenAI Responses dialect (``providers.openai_responses``) against recorded traffic.

Every interaction of every cassette in ``openai-responses/`` is either a ``Case`` below or listed
in ``SKIPPED`` with its reason (``test_every_recorded_interaction_is_accounted_for`` enforces that;
``openai-compatible/`` holds no ``/responses`` traffic, and a test says so). A case rebuilds what
the gateway would hand the adapter for the recording's request: the recorded body, with the model
replaced by a team alias, goes through ``proxy.decoding.decode_create_request`` exactly as an
incoming body does. For each case:

1. ``prepare()`` must produce the recorded body, up to the ``Rewrite``s the case names (each says
   why and must change something, so a stale one fails);
2. ``run()`` replays the interaction: the body and URL aiohttp sent must be the prepared ones and
   the credential header the deployment's;
3. the deltas go through ``ResponseBuilder`` and the normalised output must equal both the
   hand-written expectation (types, upstream ids, texts, call ids and arguments, reasoning
   summaries and encrypted content, usage, status, incomplete reason, service tier, upstream
   model) and, field by field, the output the upstream itself reported, up to the
   ``OUTPUT_NORMALISATIONS``. Streamed replies must also produce events that validate against
   the spec, in the same order as the upstream's own events. Error recordings must map to the
   expected ``GatewayError`` whose message carries no credential.

Expected values were read from the recorded replies (long texts as prefix, suffix and length).
The tests at the end cover what no recording shows (in-band failures, items outside the core,
stream framing) with synthetic interactions, and ``prepare`` alone.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest
from vcr.stubs import aiohttp_stubs

from providers.openai_responses import OpenAIResponsesProvider
from proxy.decoding import decode_create_request
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamError,
)
from proxy.schema import deltas as d
from proxy.schema.content import ReasoningText
from proxy.schema.items import FunctionCall, Message, OpaqueItem, Reasoning
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, UpstreamRequest
from proxy.streaming import ResponseBuilder
from tests.conformance._cases import (
    ALIAS,
    API_KEY,
    BOOK_JSON,
    Failure,
    Long,
    Normalisation,
    Outcome,
    assert_accounted_for,
    build,
    case_params,
    check_case,
    check_failure,
    chunked_stream,
    collect,
    decoded_request,
    message_parts,
    recorded_ids,
    to_json,
    usage_tuple,
)
from tests.conformance.cassette import Interaction, fixtures_dir, load, replay, synthetic
from tests.spec_validation import parse_sse, validate_event

DIR = "openai-responses"
OTHER_DIRS = ("openai-compatible",)  # searched for hosts that speak /responses too
BASE_URL = "https://api.openai.com/v1"
URL = BASE_URL + "/responses"


# -- documented normalisations -----------------------------------------------------------------
@dataclass(frozen=True)
class Rewrite(Normalisation):
    """A normalisation done by a function of the whole recorded body (or output list), which
    returns how many places it changed."""

    name: str
    why: str
    rewrite: Callable[[Any], int]

    def apply(self, body: Any) -> int:
        return self.rewrite(body)

    def __repr__(self) -> str:
        return self.name


def _type_typeless_messages(body: dict[str, Any]) -> int:
    items = body.get("input")
    changed = 0
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and "type" not in item and "role" in item:
            item["type"] = "message"
            changed += 1
    return changed


def _drop_stream_false(body: dict[str, Any]) -> int:
    if body.get("stream") is False:
        del body["stream"]
        return 1
    return 0


TYPELESS_MESSAGES = Rewrite(
    "typeless-messages", "clients send message items without 'type'; the gateway decodes them as messages and "
    "writes the 'type' the spec requires", _type_typeless_messages)
STREAM_FALSE = Rewrite(
    "stream-false", "pydantic-ai sends stream:false explicitly; the adapter leaves the default out", _drop_stream_false)


def _output_parts(output: list[dict[str, Any]], item_type: str) -> Iterator[dict[str, Any]]:
    for item in output:
        if item.get("type") == item_type:
            yield from (part for part in item.get("content") or [] if isinstance(part, dict))


def _drop_empty_logprobs(output: list[dict[str, Any]]) -> int:
    changed = 0
    for part in _output_parts(output, "message"):
        if part.get("type") == "output_text" and part.get("logprobs") == []:
            del part["logprobs"]
            changed += 1
    return changed


def _complete_reasoning_status(output: list[dict[str, Any]]) -> int:
    changed = 0
    for item in output:
        if item.get("type") == "reasoning" and "status" not in item:
            item["status"] = "completed"
            changed += 1
    return changed


EMPTY_LOGPROBS = Rewrite(
    "empty-logprobs", "OpenAI sends logprobs:[] on every output_text part; deltas carry no logprobs, so the gateway "
    "leaves the optional field out (non-empty logprobs would not match)", _drop_empty_logprobs)
REASONING_STATUS = Rewrite(
    "reasoning-status", "OpenAI leaves 'status' off reasoning items; the builder marks every item it closes",
    _complete_reasoning_status)
OUTPUT_NORMALISATIONS = (EMPTY_LOGPROBS, REASONING_STATUS)


# -- the vocabulary of cases ---------------------------------------------------------------------
def msg(item_id: str, *parts: tuple[str, Any], phase: str | None = None) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "content": list(parts), "phase": phase}


def fcall(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments}


def rs(item_id: str, summary: list[Any], *, encrypted: Any = None, content: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": summary, "content": content or [], "encrypted": encrypted}


@dataclass(frozen=True)
class Case:
    cassette: str  # file name in openai-responses/, without .yaml
    interaction: int
    expect: Outcome | Failure
    normalise: tuple[Normalisation, ...] = (TYPELESS_MESSAGES,)
    bypass: tuple[str, ...] = ()  # recorded fields the gateway's validation refuses, set after decoding

    @property
    def id(self) -> str:
        return f"{self.cassette}#{self.interaction}"

    @property
    def path(self) -> str:
        return f"{DIR}/{self.cassette}.yaml"


GPT4O = "gpt-4o-2024-08-06"
GPT5 = "gpt-5-2025-08-07"
GPT5_MINI = "gpt-5-mini-2025-08-07"
GPT55 = "gpt-5.5-2026-04-23"
SECRET_TOOL = "secret_retrieval_tool"
MELLON, RADIANCE = '{"password":"mellon"}', '{"password":"radiance"}'
TOKENS_CALLS = (36, 0, 54, 0, 90)  # every parallel secret_retrieval_tool turn


def secret_calls(first: tuple[str, str], second: tuple[str, str]) -> Outcome:
    """Two parallel ``secret_retrieval_tool`` calls as ``(item id, call id)``."""
    return Outcome([fcall(first[0], first[1], SECRET_TOOL, MELLON), fcall(second[0], second[1], SECRET_TOOL, RADIANCE)],
                   TOKENS_CALLS, GPT4O)


CASES: list[Case] = [
    # ---------------------------------------------------------------- plain text
    Case("text-nonstream", 0, Outcome(
        [msg("msg_0bee99a5de5b12910068f966a1fb3c819587e157227fc327ff", ("output_text", "4200 + 42 equals 4242."))],
        (16, 0, 11, 0, 27), GPT4O)),
    Case("text-stream", 0, Outcome(
        [msg("msg_0360bd45725b0a010068f966a601b081958e95c4085b086532", ("output_text", "4200 + 42 equals 4242."))],
        (16, 0, 11, 0, 27), GPT4O)),
    Case("multi-turn-history", 1, Outcome(
        [msg("msg_0bfe8406dc3caad9006916132acf1081939919a9196577f367",
             ("output_text", "Yes, I can confirm that I was developed by OpenAI."))],
        (36, 0, 14, 0, 50), GPT4O)),
    # ---------------------------------------------------------------- sampling and limits
    Case("sampling-params", 0, Outcome(
        [msg("msg_05c44bd417a9465100696055dbbddc8195945fcef04458d081", ("output_text", "4200 + 42 equals 4242."))],
        (16, 0, 11, 0, 27), GPT4O)),
    Case("incomplete-max-output-tokens", 0, Outcome(
        [msg("msg_043a58ea47ac058e0068f966c13978819797bd165a2ecefb31",
             ("output_text", "Sure! Here is a list of all 50 U.S. states:\n\n1. Alabama\n2. Alaska\n3. Arizona\n"
                             "4. Arkansas\n5. California\n6. Colorado\n7. Connecticut\n8. Delaware\n9. Florida"))],
        (14, 0, 50, 0, 64), GPT4O, incomplete="max_output_tokens")),
    # ---------------------------------------------------------------- input parts (typed messages)
    Case("input-image-url", 0, Outcome(
        [msg("msg_0371d245ba0faaf90068f9668756808195a999162b17b05af1",
             ("output_text", "The image is the Wikipedia logo, featuring a globe made of puzzle pieces with various "
                             "characters on them."))],
        (269, 0, 21, 0, 290), GPT4O), normalise=()),
    Case("input-file-pdf-base64", 0, Outcome(
        [msg("msg_0373be2aff90ed83006986f69e2fd0819c83ea9811f3bce6a1",
             ("output_text", "I can't see the contents of the PDF, but I can help with other questions or tasks!"))],
        (29, 0, 20, 0, 49), GPT4O), normalise=()),
    # ---------------------------------------------------------------- structured output and refusal
    Case("json-schema-strict", 0, Outcome(
        [msg("msg_005e0ab32c3df1050068f966cedb648190a1769c7ec5dea7e9", ("output_text", BOOK_JSON))],
        (166, 0, 30, 0, 196), GPT4O)),
    Case("json-schema-strict-stream", 0, Outcome(
        [msg("msg_089d7482d1faaec10068f966e1afec8196ada045413e3b10a2", ("output_text", BOOK_JSON))],
        (166, 0, 30, 0, 196), GPT4O)),
    Case("refusal-json-schema", 0, Outcome(
        [msg("msg_0e0644cfe502d3570068f966c91284819592a8b09a8e1b3597",
             ("refusal", "I'm very sorry, but I can't assist with that."))],
        (54, 0, 13, 0, 67), GPT4O)),
    # ---------------------------------------------------------------- reasoning
    Case("reasoning-effort-summary-o3mini", 0, Outcome(
        [rs("rs_68c1fa166e9c81979ff56b16882744f1093f57e27128848a",
            [Long("**Emphasizing pedestrian safety**\n\nI wan", "n cross.\" Always prioritize your safety!", 446),
             Long("**Clarifying street crossing guidance**\n", "ffic laws vary, so always stay cautious!", 631)],
            encrypted=Long("gAAAAABowfofynE_bcBtlQwnph", "4uf_XrTSBD_oHmcL8R9E5Po=", 440)),
         msg("msg_68c1fa1ec9448197b5c8f78a90999360093f57e27128848a",
             ("output_text", Long("I'm happy to help. When crossing", "safe opportunity to cross.", 1501)))],
        (13, 0, 1915, 1600, 1928), "o3-mini-2025-01-31"),
        normalise=(TYPELESS_MESSAGES, STREAM_FALSE)),
    Case("reasoning-summary", 0, Outcome(
        [rs("rs_0c6fe76bfb6817d700696afa0fdfb48197aa1316339d7ef345",
            [Long("**Counting prime numbers with \"79\"**", "\"79\" isn\u2019t contiguous there.", 518),
             Long("**Checking candidates for primality**\n\nI", "sting smaller primes with no remainders.", 545),
             Long("**Finalizing prime checks for \"79\"**\n\nAf", "ouble-checked—97 doesn\u2019t qualify either.", 533),
             Long("**Confirming the count of primes with \"7", "egative numbers either. Final answer: 3.", 494),
             Long("**Delivering the final answer**\n\nThe ins", "extra details. Alright, here it goes: 3.", 322)]),
         msg("msg_0c6fe76bfb6817d700696afa218dd88197962b4ac041b6ef86", ("output_text", "3"))],
        (32, 0, 1095, 1088, 1127), GPT5)),
    Case("reasoning-summary", 1, Outcome(  # replays the reasoning item (id + summary) and message of #0
        [rs("rs_0c6fe76bfb6817d700696afa2274948197b94d9f86f30a6422", []),
         msg("msg_0c6fe76bfb6817d700696afa22a50c8197ad47821730afcc6f", ("output_text", "I don\u2019t remember."))],
        (62, 0, 11, 0, 73), GPT5)),
    Case("reasoning-summary-stream", 0, Outcome(
        [rs("rs_0a1097cbfef27a8c00696afa2459008196a08a4261aba00f56",
            [Long("**Exploring prime numbers**\n\nI need to f", " 179 by testing it against small primes.", 443),
             Long("**Testing prime candidates**\n\nI\u2019m checki", "'t count. So, 179 and 379 are my primes!", 477),
             Long("**Final count of primes**\n\nI\u2019ve", "I\u2019m finalizing my answer as \"3.\"", 479)]),
         msg("msg_0a1097cbfef27a8c00696afa33407081969902b1b1da52f678", ("output_text", "3"))],
        (32, 0, 839, 832, 871), GPT5)),
    Case("reasoning-summary-stream", 1, Outcome(
        [rs("rs_0a1097cbfef27a8c00696afa340cac81969cbdf59ae7fcc4d7", []),
         msg("msg_0a1097cbfef27a8c00696afa34411c8196842111c511fa629f", ("output_text", "I don't remember."))],
        (62, 0, 10, 0, 72), GPT5)),
    Case("reasoning-tools-stream", 0, Outcome(  # store:false + include encrypted_content, yet no reasoning item
        [fcall("fc_00d64fa806f333310169fab1bf324481a0852cda3180856290", "call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply",
               '{"a":1231,"b":2331}')],
        (58, 0, 23, 0, 81), GPT55)),
    Case("reasoning-tools-stream", 1, Outcome(  # the message phase is announced only by output_item.added
        [msg("msg_0dacb603de1c9e6b0169fab1c2e40081a3857ad788023cb7ea",
             ("output_text", "1231 \u00d7 2331 = **2,869,461**"), phase="final_answer")],
        (94, 0, 18, 0, 112), GPT55)),
    # ---------------------------------------------------------------- tool choice
    Case("tool-choice-none", 0, Outcome(
        [rs("rs_0e86356664bdb6ba00697bc1f0466081a1b9ef076defab7d67", [],
            encrypted=Long("gAAAAABpe8H48Ydx_GoRPPmxtB", "eP6GFb3oyYXry0mOX6X9Yo=", 3384)),
         msg("msg_0e86356664bdb6ba00697bc1f5c79081a18d715cb3300707ea",
             ("output_text", Long("Do you mean Paris, France?", "Which Paris did you mean?", 677)))],
        (50, 0, 567, 384, 617), GPT5_MINI),
        normalise=(TYPELESS_MESSAGES, STREAM_FALSE)),
    Case("tool-choice-required", 0, Outcome(
        [rs("rs_0b6a550ff4bfcad200697bc1fbfef881a282eb6a2ef7e56886", [],
            encrypted=Long("gAAAAABpe8H9K2iXcn6Jf9ccFF", "K9qh9lMMWZFuJSDc63AMDtTw==", 1444)),
         fcall("fc_0b6a550ff4bfcad200697bc1fd214c81a2bd28c67241c9d7d1", "call_1qsWTcKZwQRwKLxPFIMpbnzV", "get_weather",
               '{"city":"Paris"}')],
        (48, 0, 105, 64, 153), GPT5_MINI),
        normalise=(TYPELESS_MESSAGES, STREAM_FALSE)),
    Case("tool-choice-specific", 0, Outcome(
        [rs("rs_074517f3a5279b5800697bcde91a50819c82f9b5885c32cbe6", [],
            encrypted=Long("gAAAAABpe83qACF5ss8iTgjK3X", "OPQyvLPFr3vKldV8YtKldA==", 1380)),
         fcall("fc_074517f3a5279b5800697bcdea4cd0819caabe792fa74ce462", "call_VfwnLMHhNSM9WQ5l8wXDFKHF", "get_weather",
               '{"city":"Paris"}')],
        (68, 0, 95, 64, 163), GPT5_MINI),
        normalise=(TYPELESS_MESSAGES, STREAM_FALSE)),
    # ---------------------------------------------------------------- parallel tool round trips
    # #0/#1 with strict:false, #2/#3 and #4/#5 with strict:true (recorded twice by the client's test suite).
    Case("tools-parallel-roundtrip", 0, secret_calls(
        ("fc_05020a9191cad7ac0068f966b1446c8190b34b78d6f788eeec", "call_bzXaB1HDWsWy7n6bMrxJzNNa"),
        ("fc_05020a9191cad7ac0068f966b16f80819088f6dab6c16c4653", "call_Dd4wvykCr6NttXKxRK0BFH96"))),
    Case("tools-parallel-roundtrip", 1, Outcome(
        [msg("msg_05020a9191cad7ac0068f966b29f2c8190b17e1e76b16eb31c",
             ("output_text", 'Here are the secrets:\n\n- For password "mellon": Welcome to Moria!\n'
                             '- For password "radiance": Life before Death'))],
        (136, 0, 30, 0, 166), GPT4O)),
    Case("tools-parallel-roundtrip", 2, secret_calls(
        ("fc_028350e31aaf0a710069689afbffb08196a20c6cc653b43055", "call_QSN7tSAfBLgrTP3cvjbf7kTZ"),
        ("fc_028350e31aaf0a710069689afc1b148196a52c957be576462f", "call_nZTyOck74QejXCmecXxhMUly"))),
    Case("tools-parallel-roundtrip", 3, Outcome(
        [msg("msg_028350e31aaf0a710069689afce0c48196945204ab94a5df55",
             ("output_text", "Here are the secrets associated with the passwords:\n\n- **mellon:** Welcome to Moria!\n"
                             "- **radiance:** Life before Death"))],
        (136, 0, 30, 0, 166), GPT4O)),
    Case("tools-parallel-roundtrip", 4, secret_calls(
        ("fc_0467adec912138780069689b104a108193a87161e6e768199d", "call_ZuiErmwO3jdjHdDKTX2LH96R"),
        ("fc_0467adec912138780069689b109f3c81939135b645a550377c", "call_KaOQQvNXdvVZSn8ZaOW8FQDE"))),
    Case("tools-parallel-roundtrip", 5, Outcome(
        [msg("msg_0467adec912138780069689b1148f48193b62aeb03bd810604",
             ("output_text", 'Here are the secrets:\n\n1. **Password: mellon** - "Welcome to Moria!"\n'
                             '2. **Password: radiance** - "Life before Death"'))],
        (136, 0, 36, 0, 172), GPT4O)),
    Case("tools-parallel-roundtrip-stream", 0, secret_calls(
        ("fc_0c3b09d20eedf2d30068f966bad8b88190af96d232f504ef1f", "call_sKC7OABqf2A2PTLCm0CLeRWV"),
        ("fc_0c3b09d20eedf2d30068f966bafd288190a9045fdc554de6d5", "call_OdR3s3xop0vtgkDyWRMLafuH"))),
    Case("tools-parallel-roundtrip-stream", 1, Outcome(
        [msg("msg_0c3b09d20eedf2d30068f966bc0afc81909ccc6a383749530f",
             ("output_text", "Here are the secrets associated with each password:\n\n- **mellon**: Welcome to Moria!\n"
                             "- **radiance**: Life before Death"))],
        (136, 0, 32, 0, 168), GPT4O)),
    Case("tools-parallel-roundtrip-stream", 2, secret_calls(
        ("fc_087fd66e6fa25afd0069689b33ab908193943bbfb9aea1ff4c", "call_X6173PYkiubC8YJRPzr8osHX"),
        ("fc_087fd66e6fa25afd0069689b33c1288193970a49066a9cda57", "call_OiUVT2dz7nh3PHrEPGnvLPyi"))),
    Case("tools-parallel-roundtrip-stream", 3, Outcome(
        [msg("msg_087fd66e6fa25afd0069689b346fb8819394caa5e641b11cc3",
             ("output_text", "Here are the secrets associated with the passwords:\n\n- **mellon:** Welcome to Moria!\n"
                             "- **radiance:** Life before Death"))],
        (136, 0, 30, 0, 166), GPT4O)),
    Case("tools-parallel-roundtrip-stream", 4, secret_calls(
        ("fc_0a3946e8455bf5540069689b42ec4881948720c14ef5bad6b2", "call_JFcMnB3B0uvpADG11Egu9VT3"),
        ("fc_0a3946e8455bf5540069689b4321e88194b5909fb48bf98678", "call_bFXbNfOOKMw0esfOPep1dwdW"))),
    Case("tools-parallel-roundtrip-stream", 5, Outcome(
        [msg("msg_0a3946e8455bf5540069689b43f1988194b5a3db1778e6730d",
             ("output_text", "Here are the secrets associated with the passwords:\n\n"
                             '- **mellon**: "Welcome to Moria!"\n- **radiance**: "Life before Death"'))],
        (136, 0, 35, 0, 171), GPT4O)),
    # ---------------------------------------------------------------- errors
    Case("error-400-invalid-temperature", 0,  # a JSON error although the request asked for a stream
         Failure(InvalidRequest, 400, "decimal_below_min_value", "Invalid 'temperature'", param="temperature"),
         bypass=("temperature",)),
    Case("error-400-model-not-found", 0,
         Failure(InvalidRequest, 400, "model_not_found", "does not exist", param="model")),
    Case("error-400-model-not-found", 1,  # the client's retry of #0
         Failure(InvalidRequest, 400, "model_not_found", "does not exist", param="model")),
    Case("error-401-invalid-key", 0,  # the gateway's own key is bad: not the caller's fault, not a 401
         Failure(UpstreamError, 502, "upstream_auth_failed", "refused the gateway's credentials",
                 hidden=("Incorrect API key", "*****", "2345", "api-keys"))),
]

# Interactions not replayed as cases, with the reason. Each becomes a skipped test so the report
# lists it; test_every_recorded_interaction_is_accounted_for keeps this list complete.
SKIPPED: dict[tuple[str, int], str] = {
    ("multi-turn-history", 0): "not Responses traffic: the Gemini generateContent call of a cross-provider "
                               "history test; its answer is replayed as the assistant message of #1",
    ("reasoning-effort-summary-o3mini", 1): "not Responses traffic: pydantic-ai's follow-up on /v1/chat/completions, "
                                            "replaying #0's reasoning summary as <think> text (Chat dialect)",
}


# -- helpers -----------------------------------------------------------------------------------
def _deployment(model: str, **overrides: Any) -> Deployment:
    return Deployment(name="t", provider="openai", dialect="openai_responses", base_url=BASE_URL, model=model,
                      api_key=API_KEY, **overrides)


def _request(client_body: dict[str, Any], *, bypass: tuple[str, ...] = (),
             deployment: Deployment | None = None) -> UpstreamRequest:
    """What the engine hands the adapter for this create body: ``decoded_request`` of the body
    with the model replaced by the team alias, for the deployment of the recorded model."""
    return decoded_request({**client_body, "model": ALIAS},
                           deployment or _deployment(str(client_body["model"])), bypass=bypass)


def _summary(resource: ResponseResource) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in resource.output:
        if isinstance(item, Message):
            phase = item.phase if isinstance(item.phase, str) else None
            out.append(msg(str(item.id), *message_parts(item), phase=phase))
        elif isinstance(item, FunctionCall):
            out.append(fcall(str(item.id), item.call_id, item.name, item.arguments))
        elif isinstance(item, Reasoning):
            content = [p.text for p in item.content or [] if isinstance(p, ReasoningText)]
            encrypted = item.encrypted_content if isinstance(item.encrypted_content, str) else None
            out.append(rs(str(item.id), [getattr(p, "text", p) for p in item.summary], encrypted=encrypted,
                          content=content))
        else:
            raise AssertionError(f"unexpected output item {item!r}")
    return out


def _recorded_events(interaction: Interaction) -> list[dict[str, Any]]:
    events, _ = parse_sse(interaction.response_text())
    return events


def _recorded_reply(interaction: Interaction) -> dict[str, Any]:
    """The response the upstream reported: the JSON body, or the stream's terminal ``response``."""
    if not _is_stream(interaction):
        return dict(interaction.response_json())
    terminal = [e for e in _recorded_events(interaction) if e["type"] in ("response.completed", "response.incomplete")]
    assert len(terminal) == 1
    return dict(terminal[0]["response"])


def _is_stream(interaction: Interaction) -> bool:
    return interaction.response_body.lstrip().startswith(b"event:")


def _normalised_recorded_output(interaction: Interaction) -> tuple[list[dict[str, Any]], set[str]]:
    """The recorded output after the output normalisations, and the names of those that applied."""
    output = copy.deepcopy(_recorded_reply(interaction)["output"])
    applied = {n.name for n in OUTPUT_NORMALISATIONS if n.apply(output)}
    return output, applied


def _normalised_recorded_event_types(interaction: Interaction) -> list[str]:
    kinds: list[str] = []
    for event in _recorded_events(interaction):
        kinds.append(event["type"])
    return kinds


# -- the recorded cases ------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params(CASES, SKIPPED, lambda cassette: f"{DIR}/{cassette}.yaml"))
async def test_recorded_case(case: Case, session: aiohttp.ClientSession) -> None:
    recording = load(case.path, interactions=[case.interaction])
    interaction = recording.interactions[0]
    assert (interaction.method, interaction.uri) == ("POST", URL)
    recorded_body = recording.recorded_requests[0]
    if case.bypass:  # the gateway itself would have refused this body before any upstream call
        with pytest.raises(InvalidRequest) as refused:
            decode_create_request(json.dumps(recorded_body).encode())
        assert refused.value.param in case.bypass
    request = _request(recorded_body, bypass=case.bypass)
    provider = OpenAIResponsesProvider(session)
    prepared = provider.prepare(request)
    assert prepared.body["model"] == recorded_body["model"] != ALIAS
    streamed = _is_stream(interaction)
    _, result = await check_case(case, recording, prepared, provider.run(request),
                                 headers={"Authorization": f"Bearer {API_KEY}"}, pieces=2 if streamed else 0,
                                 summarise=_summary)
    if isinstance(case.expect, Outcome):
        assert isinstance(result, list) and request.stream == streamed
        _check_reported(result, interaction)


def _check_reported(deltas: list[d.Delta], interaction: Interaction) -> None:
    """The response built from ``deltas``, field by field against what the upstream itself
    reported, and its events in the upstream's order."""
    builder, events = build(deltas)
    resource = builder.resource
    assert resource.model == ALIAS
    recorded = _recorded_reply(interaction)
    expected_output, _ = _normalised_recorded_output(interaction)
    assert to_json(resource.output) == expected_output
    assert to_json(resource.usage) == recorded["usage"]
    assert (recorded["status"], recorded["incomplete_details"]) == (resource.status,
                                                                      to_json(resource.incomplete_details))
    assert recorded["service_tier"] == resource.service_tier
    if _is_stream(interaction):
        assert [to_json(event)["type"] for event in events] == _normalised_recorded_event_types(interaction)
    else:
        assert not any(isinstance(delta, d.PassthroughEvent) for delta in deltas)


def test_every_recorded_interaction_is_accounted_for() -> None:
    recorded = recorded_ids(DIR, lambda path: path.stem)
    assert len({cassette for cassette, _ in recorded}) == 22
    assert_accounted_for(CASES, SKIPPED, recorded)
    for (cassette, index) in SKIPPED:  # skipped only because another adapter speaks them
        interaction = load(f"{DIR}/{cassette}.yaml", interactions=[index]).interactions[0]
        assert interaction.uri != URL, f"{cassette}#{index} speaks /responses: make it a case"


def test_no_openai_compatible_host_speaks_responses() -> None:
    """If a compatible host's /responses traffic is ever recorded, it needs cases here."""
    for folder in OTHER_DIRS:
        for path in sorted((fixtures_dir() / folder).glob("*.yaml")):
            for interaction in load(f"{folder}/{path.name}").interactions:
                assert not interaction.path.endswith("/responses"), f"{folder}/{path.name}#{interaction.index}"


def test_every_output_normalisation_is_needed() -> None:
    used: set[str] = set()
    for case in CASES:
        if isinstance(case.expect, Outcome):
            interaction = load(case.path, interactions=[case.interaction]).interactions[0]
            used |= _normalised_recorded_output(interaction)[1]
    assert used == {n.name for n in OUTPUT_NORMALISATIONS}


STREAM_PAIRS = [
    ("text-nonstream", "text-stream", range(1)),
    ("json-schema-strict", "json-schema-strict-stream", range(1)),
    ("tools-parallel-roundtrip", "tools-parallel-roundtrip-stream", range(6)),
    ("reasoning-summary", "reasoning-summary-stream", range(2)),
]


def _shapes(resource: ResponseResource) -> list[tuple[Any, ...]]:
    shapes = []
    for item in to_json(resource.output):
        parts = tuple(part["type"] for key in ("content", "summary") for part in item.get(key) or []
                      if isinstance(part, dict))
        shapes.append((item["type"], str(item["id"]).split("_")[0], tuple(sorted(item)), tuple(sorted(set(parts))),
                       item.get("status"), item.get("role")))
    return shapes


@pytest.mark.parametrize(("whole", "streamed", "indices"), STREAM_PAIRS, ids=[p[0] for p in STREAM_PAIRS])
async def test_streamed_and_whole_replies_normalise_alike(whole: str, streamed: str, indices: range,
                                                          session: aiohttp.ClientSession) -> None:
    provider = OpenAIResponsesProvider(session)
    for index in indices:
        shapes = []
        for cassette in (whole, streamed):
            recording = load(f"{DIR}/{cassette}.yaml", interactions=[index])
            request = _request(recording.recorded_requests[0])
            with replay(recording):
                builder, _ = build(await collect(provider.run(request)))
            shapes.append(_shapes(builder.resource))
        assert shapes[0] == shapes[1], f"#{index}"
        assert shapes[0], f"#{index} produced no output"


# -- request translation without a recording ---------------------------------------------------
def test_prepare_forwards_the_request_nearly_as_sent() -> None:
    client_body = {
        "model": "ignored", "previous_response_id": "resp_earlier", "background": True, "store": False,
        "instructions": "Be brief.", "include": ["reasoning.encrypted_content"], "metadata": {"team": "a"},
        "reasoning": {"effort": "low", "summary": "auto"}, "text": {"verbosity": "low"}, "temperature": 0.2,
        "top_p": 0.5, "max_output_tokens": 64, "parallel_tool_calls": False, "service_tier": "flex",
        "truncation": "auto", "prompt_cache_key": "k", "safety_identifier": "u1", "top_logprobs": 2,
        "stream": True, "stream_options": {"include_obfuscation": False},
        "input": [{"role": "user", "content": "hi"},
                  {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}],
        "tools": [{"type": "web_search", "search_context_size": "low"}, {"name": "f", "parameters": {}}],
        "tool_choice": {"type": "web_search"},
    }
    deployment = _deployment("gpt-5", query={"api-version": "v1"}, headers={"X-Team": "research"})
    streamed = OpenAIResponsesProvider(None).prepare(  # type: ignore[arg-type]  # prepare does no I/O
        _request(client_body, deployment=deployment))
    assert streamed.url == URL + "?api-version=v1"
    assert streamed.headers == {"Authorization": f"Bearer {API_KEY}", "X-Team": "research",
                                "Content-Type": "application/json"}
    assert json.loads(streamed.wire_body()) == {
        "model": "gpt-5", "instructions": "Be brief.", "store": False, "include": ["reasoning.encrypted_content"],
        "metadata": {"team": "a"}, "reasoning": {"effort": "low", "summary": "auto"}, "text": {"verbosity": "low"},
        "temperature": 0.2, "top_p": 0.5, "max_output_tokens": 64, "parallel_tool_calls": False,
        "service_tier": "flex", "truncation": "auto", "prompt_cache_key": "k", "safety_identifier": "u1",
        "top_logprobs": 2, "stream": True, "stream_options": {"include_obfuscation": False},
        "input": [{"type": "message", "role": "user", "content": "hi"},
                  {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}],
        "tools": [{"type": "web_search", "search_context_size": "low"},
                  {"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": {"type": "web_search"},
    }
    whole = OpenAIResponsesProvider(None).prepare(  # type: ignore[arg-type]
        _request({**client_body, "stream": False}, deployment=deployment))
    assert "stream" not in whole.body
    assert "stream_options" not in whole.body  # OpenAI refuses stream options without a stream
    assert json.loads(whole.wire_body()) == {k: v for k, v in json.loads(streamed.wire_body()).items()
                                             if k not in ("stream", "stream_options")}


# -- replies without a recording (synthetic interactions) --------------------------------------
def _sse(*events: dict[str, Any], eol: str = "\n") -> bytes:
    frames = []
    for number, event in enumerate(events):
        event = {**event, "sequence_number": number}
        frames.append(f"event: {event.get('type', 'error')}{eol}data: {json.dumps(event)}{eol}{eol}")
    return "".join(frames).encode()


def _resource(status: str = "in_progress", output: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1, "status": status, "model": "gpt-4o-2024-08-06",
            "output": output or [], "service_tier": "auto", "usage": None, **extra}


USAGE = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 1}, "output_tokens": 3,
         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 8}
CREATED = ({"type": "response.created", "response": _resource()},
           {"type": "response.in_progress", "response": _resource()})
MESSAGE = {"id": "msg_1", "type": "message", "status": "in_progress", "content": [], "role": "assistant"}


def _text_events(text: str, index: int = 0) -> list[dict[str, Any]]:
    common = {"item_id": "msg_1", "output_index": index}
    done = {**MESSAGE, "status": "completed", "content": [{"type": "output_text", "annotations": [], "text": text}]}
    return [{"type": "response.output_item.added", "output_index": index, "item": MESSAGE},
            {"type": "response.content_part.added", "content_index": 0, **common,
             "part": {"type": "output_text", "annotations": [], "text": ""}},
            *({"type": "response.output_text.delta", "content_index": 0, "delta": piece, **common}
              for piece in re.findall(r"\S+ ?", text)),
            {"type": "response.output_text.done", "content_index": 0, "text": text, **common},
            {"type": "response.output_item.done", "output_index": index, "item": done}]


def _completed(output: list[Any], **extra: Any) -> dict[str, Any]:
    fields = {"usage": USAGE, "service_tier": "default", **extra}
    return {"type": "response.completed", "response": _resource("completed", output, **fields)}


async def _run_synthetic(session: aiohttp.ClientSession, body: bytes | dict[str, Any], *, stream: bool = True,
                         status: int = 200, seen: list[d.Delta] | None = None) -> list[d.Delta]:
    request = _request({"model": "gpt-4o", "input": "x", "stream": stream})
    content_type = "text/event-stream" if stream and status == 200 else "application/json"
    deltas = seen if seen is not None else []
    with replay(synthetic(Interaction.make(URL, status=status, body=body, headers={"Content-Type": content_type}))):
        async for delta in OpenAIResponsesProvider(session).run(request):
            deltas.append(delta)
    return deltas


async def test_stream_without_terminal_event_fails(session: aiohttp.ClientSession) -> None:
    seen: list[d.Delta] = []
    with pytest.raises(UpstreamError, match="ended before its terminal event") as caught:
        await _run_synthetic(session, _sse(*CREATED, *_text_events("cut short")[:3]), seen=seen)
    assert [delta.text for delta in seen if isinstance(delta, d.TextDelta)] == ["cut "]
    assert caught.value.retryable


def _compact_sse(*events: dict[str, Any]) -> bytes:
    """Events as OpenAI writes them: no spaces, ``type`` first."""
    frames = ((event["type"], json.dumps(event, separators=(",", ":"))) for event in events)
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in frames).encode()


async def test_events_read_the_same_however_they_are_written(session: aiohttp.ClientSession) -> None:
    """OpenAI's text delta events (compact, ``type`` first: most of a stream) and the events that
    open a response (the whole response so far, of which only the model is needed) take fast
    paths; one written any other way takes the general one; both give the same deltas."""
    phased = {**MESSAGE, "phase": "final_answer"}
    opening = [{"type": "response.queued", "response": _resource("queued", model="gpt-4o-queued")}, *CREATED,
               {"type": "response.in_progress", "response": None}, {"type": "response.in_progress"},
               {"type": "response.in_progress", "response": _resource(model=None)}]
    events = [*opening, {"type": "response.output_item.added", "output_index": 0, "item": phased},
              *_text_events("two words")[1:], _completed([])]
    compact = await _run_synthetic(session, _compact_sse(*events))
    spaced = await _run_synthetic(session, _sse(*events))
    assert compact == spaced
    assert [delta.model for delta in compact if isinstance(delta, d.ResponseInfo)][:6] == [
        "gpt-4o-queued", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06", msgspec.UNSET, msgspec.UNSET, msgspec.UNSET]
    assert [(delta.text, delta.key, delta.item_id, delta.phase) for delta in compact
            if isinstance(delta, d.TextDelta)] == [("two ", 0, "msg_1", "final_answer"), ("words", 0, "msg_1",
                                                                                          "final_answer")]
    for broken in (b'{"type":"response.output_text.delta","delta":"x"',
                   b'{"type":"response.output_text.delta","output_index":0,"delta":7}',
                   b'{"type":"response.created","response":{"model":"gpt-4o"',
                   b'{"type":"response.in_progress","response":"a string"}',
                   b'{"type":"response.completed","response":{"usage":'):
        with pytest.raises(UpstreamError, match="sent malformed JSON"):
            await _run_synthetic(session, _compact_sse(*CREATED) + b"data: " + broken + b"\n\n")


@pytest.mark.parametrize(("ending", "reason"), [
    (_completed([{"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"}]),
     "tool_calls"),
    ({"type": "response.incomplete", "response": _resource(
        "incomplete", incomplete_details={"reason": "content_filter"},
        usage={**USAGE, "input_tokens_details": None}, service_tier="flex")}, "content_filter"),
    ({"type": "response.incomplete", "response": _resource("incomplete", incomplete_details=None)},
     "max_output_tokens"),
    ({"type": "response.completed", "response": None}, "stop"),
    ({"type": "response.completed"}, "stop"),
], ids=["completed-with-a-call", "content-filtered", "incomplete-without-details", "null-response", "no-response"])
async def test_ending_events_read_the_same_however_they_are_written(
        session: aiohttp.ClientSession, ending: dict[str, Any], reason: str) -> None:
    """The events that end a response (the whole response again) take a fast path too, reading
    only what the terminal deltas need."""
    events = [*CREATED, *_text_events("done"), ending]
    compact = await _run_synthetic(session, _compact_sse(*events))
    spaced = await _run_synthetic(session, _sse(*events))
    assert compact == spaced
    finish = compact[-1]
    assert isinstance(finish, d.Finish) and finish.reason == reason


@pytest.mark.parametrize("event", [
    {"type": "response.output_text.delta", "output_index": 0},
    {"type": "response.output_item.added", "output_index": 0, "item": "a string"},
    {"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call", "name": "f"}},
], ids=["text-delta-without-text", "item-not-an-object", "call-without-call-id"])
async def test_an_event_without_what_its_type_promises_is_the_upstreams_error(
        session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError, match="sent an unexpected stream event") as caught:
        await _run_synthetic(session, _sse(*CREATED, event))
    assert caught.value.status == 502


@pytest.mark.parametrize(("body", "message"), [
    (b'[{"output": []}]', "sent an unexpected reply"),
    (b'{"output": [', "sent malformed JSON"),
], ids=["not-an-object", "cut"])
async def test_a_whole_reply_that_is_no_response_is_the_upstreams_error(
        session: aiohttp.ClientSession, body: bytes, message: str) -> None:
    with pytest.raises(UpstreamError, match=message) as caught:
        await _run_synthetic(session, body, stream=False)
    assert caught.value.status == 502


async def test_a_reply_without_what_its_items_promise_is_the_upstreams_error(session: aiohttp.ClientSession) -> None:
    misshapen = _resource("completed", [{"type": "function_call", "id": "fc_1", "name": "f", "arguments": "{}"}])
    with pytest.raises(UpstreamError, match="sent an unexpected reply") as caught:
        await _run_synthetic(session, misshapen, stream=False)
    assert caught.value.status == 502


@pytest.mark.parametrize(("frame", "expect"), [
    ({"type": "error", "code": "rate_limit_exceeded", "param": None,
      "message": f"Rate limit reached for key {API_KEY}"},
     Failure(RateLimited, 429, "rate_limit_exceeded", "Rate limit reached for key [redacted]", retryable=True)),
    ({"type": "error", "error": {"type": "invalid_request_error", "code": "context_length_exceeded", "param": "input",
                                 "message": "Your input exceeds the context window of this model."}},
     Failure(ContextTooLong, 400, "context_length_exceeded", "Your input exceeds the context window of this model.",
             param="input")),
    ({"type": "error", "code": None, "message": "Something went wrong.", "param": None},
     Failure(UpstreamError, 502, "upstream_error", "Something went wrong.", retryable=True)),
    ({"error": {"message": "An error occurred while streaming.", "type": "server_error", "code": "server_error"}},
     Failure(UpstreamError, 502, "upstream_error", "An error occurred while streaming.", retryable=True)),
], ids=["rate-limit", "nested-context-length", "no-code", "untyped-error-frame"])
async def test_error_event_after_output(session: aiohttp.ClientSession, frame: dict[str, Any],
                                        expect: Failure) -> None:
    seen: list[d.Delta] = []
    with pytest.raises(GatewayError) as caught:
        await _run_synthetic(session, _sse(*CREATED, *_text_events("partial answer")[:3], frame), seen=seen)
    assert [delta.text for delta in seen if isinstance(delta, d.TextDelta)] == ["partial "]
    check_failure(caught.value, expect)
    assert caught.value.message == expect.message


async def test_response_failed_before_any_output(session: aiohttp.ClientSession) -> None:
    """OpenAI reports a server failure after ``response.created``; only the model was seen by then."""
    failed = {"type": "response.failed", "response": _resource("failed", error={
        "code": "server_error", "message": f"The server had an error while processing your request ({API_KEY})."})}
    seen: list[d.Delta] = []
    with pytest.raises(UpstreamError) as caught:
        await _run_synthetic(session, _sse(*CREATED, failed), seen=seen)
    assert seen == [d.ResponseInfo(model="gpt-4o-2024-08-06")] * 2
    check_failure(caught.value, Failure(UpstreamError, 502, "upstream_error", "The server had an error while "
                                         "processing your request ([redacted]).", retryable=True))


async def test_response_failed_after_output_and_failed_json_reply(session: aiohttp.ClientSession) -> None:
    error = {"code": "invalid_prompt", "message": "Invalid prompt: flagged as potentially violating our usage policy."}
    seen: list[d.Delta] = []
    with pytest.raises(InvalidRequest) as streamed:
        await _run_synthetic(session, _sse(*CREATED, *_text_events("so far")[:3],
                                           {"type": "response.failed", "response": _resource("failed", error=error)}),
                             seen=seen)
    assert any(isinstance(delta, d.TextDelta) for delta in seen)
    assert (streamed.value.status, streamed.value.code, streamed.value.retryable) == (400, "invalid_prompt", False)
    with pytest.raises(InvalidRequest) as whole:
        await _run_synthetic(session, _resource("failed", error=error), stream=False)
    assert (whole.value.code, whole.value.message) == ("invalid_prompt", error["message"])
    with pytest.raises(RateLimited):  # an error body with a 200 status (compatible hosts)
        await _run_synthetic(session, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, stream=False)


def _custom_call(status: str, tool_input: str) -> dict[str, Any]:
    return {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_c1", "name": "run_python",
            "input": tool_input, "status": status}


async def test_unknown_item_type_passes_through(session: aiohttp.ClientSession) -> None:
    common = {"item_id": "ctc_1", "output_index": 0}
    done = _custom_call("completed", "print(1)")
    body = _sse(*CREATED,
                {"type": "response.output_item.added", "output_index": 0, "item": _custom_call("in_progress", "")},
                {"type": "response.custom_tool_call_input.delta", "delta": "print(", **common},
                {"type": "response.custom_tool_call_input.delta", "delta": "1)", **common},
                {"type": "response.custom_tool_call_input.done", "input": "print(1)", **common},
                {"type": "response.output_item.done", "output_index": 0, "item": done},
                _completed([done]))
    deltas = await _run_synthetic(session, body)
    assert [type(delta).__name__ for delta in deltas] == [
        "ResponseInfo", "ResponseInfo", "PassthroughItem", "PassthroughEvent", "PassthroughEvent", "PassthroughEvent",
        "PassthroughItem",
        "UsageDelta", "ResponseInfo", "Finish"]
    assert all(delta.key == 0 for delta in deltas if isinstance(delta, d.PassthroughItem | d.PassthroughEvent))

    # A second model turn (the gateway's tool loop): the upstream numbers its output from 0 again,
    # the gateway's stream goes on from 1.
    builder = ResponseBuilder(ResponseResource(id="resp_test", created_at=0, model=ALIAS))
    events = builder.start()
    for delta in (d.TextDelta(key=0, text="Running it.", item_id="msg_0"), d.ItemDone(key=0)):
        events += builder.feed(delta)
    builder, more = build(deltas, builder)
    encoded = [to_json(event) for event in events + more]
    assert [e["sequence_number"] for e in encoded] == list(range(len(encoded)))
    relayed = [e for e in encoded if e["type"].startswith("response.custom_tool_call_input.")]
    assert [(e["output_index"], e.get("delta", e.get("input"))) for e in relayed] == [
        (1, "print("), (1, "1)"), (1, "print(1)")]
    items = [(e["type"], e["output_index"], e["item"]) for e in encoded if e["type"].startswith("response.output_item")]
    assert items[2:] == [("response.output_item.added", 1, _custom_call("in_progress", "")),
                         ("response.output_item.done", 1, done)]
    assert builder.resource.output[1] == OpaqueItem(done)
    for event in encoded:
        validate_event(event, opaque_types=frozenset({"custom_tool_call"}))

    whole = await _run_synthetic(session, _resource("completed", [done], usage=USAGE), stream=False)
    assert whole[0] == d.PassthroughItem(key=0, item=done)
    assert build(whole)[0].resource.output == [OpaqueItem(done)]


async def test_arguments_sent_only_with_the_finished_call(session: aiohttp.ClientSession) -> None:
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "status": "in_progress"}
    body = _sse(*CREATED,
                {"type": "response.output_item.added", "output_index": 0, "item": {**call, "arguments": ""}},
                {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0,
                 "delta": '{"a"'},
                {"type": "response.output_item.done", "output_index": 0,
                 "item": {**call, "status": "completed", "arguments": '{"a": 1}'}},
                {"type": "response.output_item.added", "output_index": 1,
                 "item": {**call, "id": "fc_2", "call_id": "call_2", "arguments": '{"b": 2}'}},
                {"type": "response.output_item.done", "output_index": 1,
                 "item": {**call, "id": "fc_2", "call_id": "call_2", "status": "completed", "arguments": '{"b": 2}'}},
                _completed([]))
    builder, _ = build(await _run_synthetic(session, body))
    assert _summary(builder.resource) == [fcall("fc_1", "call_1", "f", '{"a": 1}'),
                                          fcall("fc_2", "call_2", "f", '{"b": 2}')]


async def test_null_usage_details_count_as_zero(session: aiohttp.ClientSession) -> None:
    reply = _resource("completed", [{**MESSAGE, "status": "completed", "content": [
        {"type": "output_text", "annotations": [], "text": "ok"}]}], usage={
        "input_tokens": 5, "output_tokens": 2, "total_tokens": 7, "input_tokens_details": None,
        "output_tokens_details": None})
    builder, _ = build(await _run_synthetic(session, reply, stream=False))
    assert usage_tuple(builder.resource) == (5, 0, 2, 0, 7)
    assert builder.upstream_model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize(("tier", "served"), [("priority", "priority"), ("flex", "flex"), ("auto", "default")])
async def test_served_tier_and_model_come_from_the_terminal_event(session: aiohttp.ClientSession, tier: str,
                                                                  served: str) -> None:
    """``response.created`` echoes the requested tier (``auto``); the terminal event says what served."""
    terminal = _completed([], service_tier=tier, model="gpt-4o-2024-11-20")
    builder, _ = build(await _run_synthetic(session, _sse(*CREATED, *_text_events("hi"), terminal)))
    assert (builder.resource.service_tier, builder.upstream_model) == (served, "gpt-4o-2024-11-20")
    assert usage_tuple(builder.resource) == (5, 1, 3, 0, 8)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
async def test_sse_framing_across_chunk_boundaries(session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
                                                   size: int, eol: str) -> None:
    text = "Split anywhere, still whole."
    body = _sse(*CREATED, *_text_events(text), _completed([]), eol=eol)
    # A comment line, and an event whose JSON spans two data lines (joined with a newline).
    spread = json.dumps({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                         "content_index": 0, "delta": "!"})
    cut = spread.index(' "item_id"')  # between two JSON tokens
    extra = f": keep-alive{eol}{eol}event: response.output_text.delta{eol}data: {spread[:cut]}{eol}data: {spread[cut:]}"
    body = body.replace(b"event: response.output_text.done", f"{extra}{eol}{eol}".encode()
                        + b"event: response.output_text.done", 1)
    pieces: list[bytes] = []
    monkeypatch.setattr(aiohttp_stubs, "MockStream", chunked_stream(size, pieces))
    deltas = await _run_synthetic(session, body)
    assert len(pieces) == -(-len(body) // size)
    builder, _ = build(deltas)
    assert _summary(builder.resource) == [msg("msg_1", ("output_text", text + "!"))]
    assert usage_tuple(builder.resource) == (5, 1, 3, 0, 8)
