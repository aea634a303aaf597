"""The ``ResponseResource`` echo of a create request: every field the spec requires, from what
the client sent or the documented default."""

from __future__ import annotations

import time
from typing import cast

from msgspec import UNSET

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


def _or(value: object, default: object) -> object:
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
        reasoning.effort = cast(str | None, _or(body.reasoning.effort, None))
        reasoning.summary = cast(str | None, _or(body.reasoning.summary, None))
    return ResponseResource(
        id=response_id,
        created_at=int(time.time()),
        model=model,
        status="in_progress",
        previous_response_id=cast(str | None, _or(body.previous_response_id, None)),
        instructions=cast(str | None, _or(body.instructions, None)),
        # Only function tools are echoed: the spec's ``tools`` holds no other type.
        tools=[
            FunctionToolEcho(
                name=tool.name,
                description=cast(str | None, _or(tool.description, None)),
                parameters=cast(dict | None, _or(tool.parameters, None)),
                strict=cast(bool | None, _or(tool.strict, None)),
            )
            for tool in request.tools
            if isinstance(tool, FunctionTool)
        ],
        tool_choice=cast(WireToolChoice, request.tool_choice if request.tool_choice is not None else "auto"),
        truncation=cast(str, _or(body.truncation, "disabled")),  # type: ignore[arg-type]
        parallel_tool_calls=cast(bool, _or(body.parallel_tool_calls, True)),
        text=text,
        top_p=cast(float, _or(body.top_p, 1.0)),
        presence_penalty=cast(float, _or(body.presence_penalty, 0.0)),
        frequency_penalty=cast(float, _or(body.frequency_penalty, 0.0)),
        top_logprobs=cast(int, _or(body.top_logprobs, 0)),
        temperature=cast(float, _or(body.temperature, 1.0)),
        reasoning=reasoning,
        max_output_tokens=cast(int | None, _or(body.max_output_tokens, None)),
        max_tool_calls=cast(int | None, _or(body.max_tool_calls, None)),
        store=cast(bool, _or(body.store, True)),
        background=cast(bool, _or(body.background, False)),
        service_tier=cast(str, _or(body.service_tier, "auto")),
        metadata=cast(dict, _or(body.metadata, {})),
        safety_identifier=cast(str | None, _or(body.safety_identifier, None)),
        prompt_cache_key=cast(str | None, _or(body.prompt_cache_key, None)),
    )
