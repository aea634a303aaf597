"""Input token counts: the provider's own where its dialect has a counting endpoint, else an
estimate (the rule is in docs/lifecycle.md).

``count_input_tokens`` serves ``POST /v1/responses/input_tokens``: the request is resolved as for
a response (``previous_response_id``, item references), fitted to the dialect of the deployment
the policy would try first, and counted by that upstream (OpenAI, Anthropic, Gemini). Other
dialects, and an upstream whose counting call fails, get the estimate; the result says which.

The estimate (``estimate_tokens``, ``item_tokens``) is what truncation measures with too:

* text (message text, call names and arguments, tool outputs, reasoning summaries,
  instructions, tool definitions as JSON): UTF-8 bytes / 4, rounded up;
* each image, file or video part: ``MEDIA_TOKENS``, whatever its size;
* each item: ``ITEM_TOKENS`` more, for the role and framing every provider adds;
* a compaction item: the summary it seals, whose size is 3/4 of the token's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from providers.base import TokenCounter
from proxy.auth import Principal
from proxy.decoding import ResponseRequest
from proxy.errors import GatewayError
from proxy.schema.codec import encode
from proxy.schema.content import InputFile, InputImage, InputVideo, Refusal
from proxy.schema.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    Item,
    ItemReference,
    Message,
    Reasoning,
)
from proxy.schema.request import Tool

if TYPE_CHECKING:  # the engine measures with this module's estimate
    from proxy.engine import Engine

log = logging.getLogger("interlock.token_count")

BYTES_PER_TOKEN = 4
"""UTF-8 bytes taken as one token: about right for English and code with every tokenizer in use."""
ITEM_TOKENS = 4
"""Framing tokens per item (role markers, separators)."""
MEDIA_TOKENS = 765
"""Tokens per image, file or video part: OpenAI's figure for a 1024x1024 image at high detail."""

CountMethod = Literal["provider", "estimate"]


@dataclass(frozen=True, slots=True)
class TokenCount:
    input_tokens: int
    method: CountMethod
    """``provider``: the upstream's own counting endpoint; ``estimate``: ``estimate_tokens``."""


def text_tokens(text: str) -> int:
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


def _content_tokens(content: str | Sequence[object]) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    total = 0
    for part in content:
        if isinstance(part, InputImage | InputFile | InputVideo):
            total += MEDIA_TOKENS
        elif isinstance(part, Refusal):
            total += text_tokens(part.refusal)
        else:
            total += text_tokens(getattr(part, "text", ""))
    return total


def item_tokens(item: Item) -> int:
    """The estimated tokens of one conversation item."""
    if isinstance(item, Message):
        body = _content_tokens(item.content)
    elif isinstance(item, FunctionCall):
        body = text_tokens(item.name) + text_tokens(item.arguments)
    elif isinstance(item, FunctionCallOutput):
        body = _content_tokens(item.output)
    elif isinstance(item, Reasoning):
        body = _content_tokens(item.summary) + _content_tokens(item.content if isinstance(item.content, list) else [])
    elif isinstance(item, Compaction):
        # Sealed: base64 of the summary plus a nonce and tag, so about 3/4 of its length is summary.
        body = -(-len(item.encrypted_content) * 3 // (4 * BYTES_PER_TOKEN))
    elif isinstance(item, ItemReference):
        body = 0  # resolved before anything is counted; nothing to measure yet
    else:
        body = text_tokens(encode(item).decode())
    return ITEM_TOKENS + body


def estimate_tokens(items: Sequence[Item], *, instructions: str | None = None, tools: Sequence[Tool] = ()) -> int:
    """The estimated input tokens of a request: its items, instructions and tool definitions."""
    total = sum(item_tokens(item) for item in items)
    if instructions:
        total += text_tokens(instructions)
    if tools:
        total += text_tokens(encode(list(tools)).decode())
    return total


async def count_input_tokens(engine: Engine, principal: Principal, request: ResponseRequest) -> TokenCount:
    """The input tokens of ``request`` as the first deployment the policy picks would see them.

    Nothing is charged against the team's limits. Refusals of the request itself (unknown model,
    previous response not found, a feature the dialect cannot carry) are raised as for a
    response; a failing counting call is logged and the estimate returned instead."""
    turn = await engine.prepare(principal, request, charge_limits=False)
    candidate = turn.ticket.route.candidates[0]
    deployment = candidate.deployment
    upstream, _ = engine.upstream_request(turn, candidate, stream=False)
    provider = engine.providers[deployment.dialect]
    if isinstance(provider, TokenCounter):
        call = provider.prepare_count(upstream)
        try:
            return TokenCount(input_tokens=await provider.count_tokens(call, deployment), method="provider")
        except GatewayError as exc:
            log.warning("deployment %s could not count tokens, estimating instead: %s", deployment.name, exc.message)
    estimate = estimate_tokens(upstream.items, instructions=upstream.instructions, tools=upstream.tools)
    return TokenCount(input_tokens=estimate, method="estimate")
