"""The ``ResponseResource`` echo of a create request: every field the spec requires, from what
the client sent or the documented default."""

from __future__ import annotations

import time
from typing import TypeVar, cast

from msgspec import UNSET, UnsetType

from proxy.decoding import ResponseRequest
from proxy.schema.request import FunctionTool, TextFormatJsonObject, TextFormatJsonSchema, WireToolChoice
from proxy.schema.response import (
    FunctionToolEcho,
    JsonObjectFormatEcho,
    JsonSchemaFormatEcho,
    ReasoningEcho,
    ResponseResource,
    TextEcho,
    TextFormatEcho,
)

_T = TypeVar("_T")
_D = TypeVar("_D")


def _or(value: _T | UnsetType | None, default: _D) -> _T | _D:
    """``value``, or ``default`` where the client sent none (or null)."""
    return default if value is UNSET or value is None else value


def new_resource(request: ResponseRequest, *, response_id: str, model: str) -> ResponseResource:
    body = request.body
    text = TextEcho(verbosity="medium")
    if body.text is not UNSET and body.text is not None:
        fmt = body.text.format
        if isinstance(fmt, TextFormatJsonSchema):
            text.format = JsonSchemaFormatEcho(
                name=fmt.name,
                description=fmt.description if isinstance(fmt.description, str) else None,
                strict=bool(fmt.strict) if isinstance(fmt.strict, bool) else False,
            )
        elif isinstance(fmt, TextFormatJsonObject):
            text.format = JsonObjectFormatEcho()
        else:
            text.format = TextFormatEcho()
        if isinstance(body.text.verbosity, str):
            text.verbosity = body.text.verbosity
    reasoning = ReasoningEcho()
    if body.reasoning is not UNSET and body.reasoning is not None:
        reasoning.effort = _or(body.reasoning.effort, None)
        reasoning.summary = _or(body.reasoning.summary, None)
    return ResponseResource(
        id=response_id,
        created_at=int(time.time()),
        model=model,
        status="in_progress",
        previous_response_id=_or(body.previous_response_id, None),
        instructions=_or(body.instructions, None),
        # Only function tools are echoed: the spec's ``tools`` holds no other type.
        tools=[
            FunctionToolEcho(
                name=tool.name,
                description=_or(tool.description, None),
                parameters=_or(tool.parameters, None),
                strict=_or(tool.strict, None),
            )
            for tool in request.tools
            if isinstance(tool, FunctionTool)
        ],
        tool_choice=cast(WireToolChoice, request.tool_choice if request.tool_choice is not None else "auto"),
        truncation=_or(body.truncation, "disabled"),
        parallel_tool_calls=_or(body.parallel_tool_calls, True),
        text=text,
        top_p=_or(body.top_p, 1.0),
        presence_penalty=_or(body.presence_penalty, 0.0),
        frequency_penalty=_or(body.frequency_penalty, 0.0),
        top_logprobs=_or(body.top_logprobs, 0),
        temperature=_or(body.temperature, 1.0),
        reasoning=reasoning,
        max_output_tokens=_or(body.max_output_tokens, None),
        max_tool_calls=_or(body.max_tool_calls, None),
        store=_or(body.store, True),
        background=_or(body.background, False),
        service_tier=_or(body.service_tier, "auto"),
        metadata=_or(body.metadata, {}),
        safety_identifier=_or(body.safety_identifier, None),
        prompt_cache_key=_or(body.prompt_cache_key, None),
    )
