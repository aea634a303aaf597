"""``POST /v1/responses/compact``: the conversation so far summarised by the chosen model into
one ``compaction`` item that the gateway seals.

The output is shaped like OpenAI's: the conversation's user messages as they were, then one
compaction item whose ``encrypted_content`` is the summary sealed for the team
(``proxy.adaptation.seal_summary``): clients can neither read nor forge it. A later request that
carries the output, to any provider, has the item expanded back into the summary
(``proxy.adaptation``).

The summary is an ordinary, unstored response of the model: the team's policy routes it, and its
tokens count against the team's limits and are reported as the compaction's ``usage``.
"""

from __future__ import annotations

import time

from proxy.adaptation import seal_summary
from proxy.auth import Principal
from proxy.decoding import ResponseRequest
from proxy.engine import Engine
from proxy.errors import InvalidRequest, UpstreamError
from proxy.ids import new_id
from proxy.schema.content import OutputText
from proxy.schema.items import Compaction, Message
from proxy.schema.lifecycle import CompactResource
from proxy.schema.request import CreateResponseBody
from proxy.schema.response import ResponseResource, Usage

SUMMARY_INSTRUCTIONS = (
    "You compact conversations so that an assistant can continue them with less context. The user's "
    "messages are kept word for word, so do not repeat them. Summarise everything else the conversation "
    "holds that the assistant will need: what it answered and did, decisions taken, facts and tool results "
    "that matter, names, numbers and identifiers, and what is still open. Write only the summary."
)
"""What the summarising model is told; the conversation's own instructions follow it."""
SUMMARY_REQUEST = "Summarise the conversation above as instructed."
"""The user turn that ends the conversation sent for summary (every provider wants one last)."""


async def compact(engine: Engine, principal: Principal, request: ResponseRequest) -> CompactResource:
    """The compacted form of ``request``'s conversation (``previous_response_id`` and ``input``)."""
    body = request.body
    if not request.input and not isinstance(body.previous_response_id, str):
        raise InvalidRequest("Nothing to compact: send 'input' or 'previous_response_id'.", param="input",
                             code="missing_required_parameter")
    turn = await engine.prepare(principal, _summary_request(request))
    resource = await engine.run(await engine.open(turn, stream=False))
    summary = _output_text(resource)
    if not summary:
        raise UpstreamError("The model returned no summary to compact the conversation into.")
    conversation = turn.stored_input[:-1]  # without the summary request
    kept = [item for item in conversation if isinstance(item, Message) and item.role == "user"]
    sealed = Compaction(id=new_id("cmp"), encrypted_content=seal_summary(engine.sealer, principal.team, summary))
    return CompactResource(id=new_id("resp"), created_at=int(time.time()), output=[*kept, sealed],
                           usage=resource.usage or Usage())


def _summary_request(request: ResponseRequest) -> ResponseRequest:
    """A create request asking ``request``'s model to summarise its conversation, unstored."""
    body = request.body
    instructions = SUMMARY_INSTRUCTIONS
    if isinstance(body.instructions, str) and body.instructions:
        instructions += "\n\nThe conversation's own instructions were:\n" + body.instructions
    summary_body = CreateResponseBody(model=body.model, previous_response_id=body.previous_response_id,
                                      instructions=instructions, prompt_cache_key=body.prompt_cache_key,
                                      store=False)
    return ResponseRequest(body=summary_body, input=[*request.input, Message(role="user", content=SUMMARY_REQUEST)],
                           tools=[], tool_choice=None, size=request.size)


def _output_text(resource: ResponseResource) -> str:
    return "".join(part.text for item in resource.output if isinstance(item, Message)
                   for part in item.content if isinstance(part, OutputText)).strip()
