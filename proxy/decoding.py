"""Decode and validate ``POST /v1/responses`` bodies.

The fast path decodes straight into ``CreateResponseBody`` with one module-level decoder. When
that fails, the lenient path repairs what real clients send (message items without ``type``,
bare ``{"id"}`` references, tools without ``type``), keeps item and tool types outside the core
as opaque values for OpenAI upstreams, and re-validates piece by piece so the error names the
exact JSON path.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, cast

import msgspec
from msgspec import UNSET, Struct

from proxy.errors import InvalidRequest
from proxy.schema.codec import KNOWN_ITEM_TYPES, known_item_decoder, raw_list_decoder
from proxy.schema.items import Item, KnownItem, Message, OpaqueItem
from proxy.schema.request import (
    AllowedTools,
    CreateResponseBody,
    FunctionTool,
    SpecificFunction,
    Tool,
    ToolChoice,
    WireToolChoice,
)


class ResponseRequest(Struct, kw_only=True):
    """A decoded create request: the body, plus input items, tools and tool choice that may hold
    types outside the core."""

    body: CreateResponseBody
    input: list[Item]
    tools: list[Tool]
    tool_choice: ToolChoice | None
    size: int = 0
    """Bytes of the JSON body: a cheap first estimate of the input's size."""


_body_decoder = msgspec.json.Decoder(CreateResponseBody)
_path_re = re.compile(r" - at `(?:key` in `)?\$\.?(.*)`$")


NOT_JSON = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
"""What decoding raises for bytes it cannot read as JSON: malformed, nested deeper than the
interpreter's recursion limit, or a string that is not UTF-8. Catch ``msgspec.ValidationError``
(a ``DecodeError``) before these."""


def not_json(exc: Exception, what: str = "request body") -> InvalidRequest:
    """The 400 for one of ``NOT_JSON``."""
    if isinstance(exc, RecursionError):
        reason = "it is nested too deeply"
    elif isinstance(exc, UnicodeDecodeError):
        reason = "it holds a string that is not UTF-8"
    else:
        reason = str(exc)
    return InvalidRequest(f"The {what} is not valid JSON: {reason}", code="invalid_json")


def decode_create_request(raw: bytes) -> ResponseRequest:
    try:
        request = _decode(raw)
    except NOT_JSON as exc:
        raise not_json(exc) from None
    request.size = len(raw)
    _check_tools(request)
    return request


def invalid_from_validation(exc: msgspec.ValidationError, prefix: str = "") -> InvalidRequest:
    """An ``InvalidRequest`` whose ``param`` is the JSON path msgspec reported."""
    text = str(exc)
    match = _path_re.search(text)
    path = match.group(1) if match else ""
    reason = _path_re.sub("", text)
    path = path.replace("[...]", "")
    param = prefix + ("." + path if prefix and path and not path.startswith("[") else path) if path else prefix
    where = f" at '{param}'" if param else ""
    return InvalidRequest(f"Invalid request{where}: {reason}.", param=param or None,
                          code="invalid_value" if param else "invalid_request")


def _input_items(value: Any) -> list[Item]:
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if isinstance(value, list):
        return list(value)
    return []


def _decode(raw: bytes) -> ResponseRequest:
    try:
        body = _body_decoder.decode(raw)
    except msgspec.ValidationError:
        return _decode_leniently(raw)
    return ResponseRequest(
        body=body,
        input=_input_items(body.input),
        tools=list(body.tools) if isinstance(body.tools, list) else [],
        tool_choice=body.tool_choice if body.tool_choice is not UNSET else None,
    )


class _EncodedParts(CreateResponseBody, kw_only=True):
    """The body with ``input``, ``tools`` and ``tool_choice`` left as their JSON (empty when
    absent), for the lenient path to check piece by piece."""

    input: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    tools: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]
    tool_choice: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]


_parts_decoder = msgspec.json.Decoder(_EncodedParts)
_message_decoder = msgspec.json.Decoder(Message)
_choice_decoder = msgspec.json.Decoder(WireToolChoice | None)
_BODY_FIELDS = tuple(name for name in CreateResponseBody.__struct_fields__
                     if name not in ("input", "tools", "tool_choice"))
_function_tool_decoder = msgspec.json.Decoder(FunctionTool)


def _decode_leniently(raw: bytes) -> ResponseRequest:
    # The rest of the body is decoded with its types; the three parts are decoded one element at
    # a time, each first straight into its type (cheap) and only where that fails repaired from
    # its builtins: an agent's request carries tens of KB of items and tools.
    try:
        parts = _parts_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        # What is not JSON at all (nested too deeply, say) is refused as such before any field.
        with contextlib.suppress(msgspec.ValidationError):
            msgspec.json.decode(raw)
        if str(exc).startswith("Expected `object`, got"):  # the body itself is no object
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json") from None
        raise invalid_from_validation(exc) from None
    body = CreateResponseBody(**{name: getattr(parts, name) for name in _BODY_FIELDS})

    raw_input = _builtin_unless_list(parts.input, "input")
    if isinstance(raw_input, list):
        items = [_item(element, f"input[{i}]") for i, element in enumerate(raw_input)]
    elif raw_input is UNSET or raw_input is None or isinstance(raw_input, str):
        items = _input_items(raw_input)
        if isinstance(raw_input, str) and len(raw_input) > 10 * 1024 * 1024:
            raise InvalidRequest("Invalid request at 'input': string longer than 10485760.", param="input",
                                 code="invalid_value")
    else:
        raise InvalidRequest("'input' must be a string or an array of items.", param="input", code="invalid_type")

    raw_tools = _builtin_unless_list(parts.tools, "tools")
    if isinstance(raw_tools, list):
        tools = [_tool(element, f"tools[{i}]") for i, element in enumerate(raw_tools)]
    elif raw_tools is UNSET or raw_tools is None:
        tools = []
    else:
        raise InvalidRequest("'tools' must be an array.", param="tools", code="invalid_type")

    return ResponseRequest(body=body, input=items, tools=tools, tool_choice=_choice(parts.tool_choice))


def _builtin_unless_list(part: msgspec.Raw, param: str) -> Any:
    """``UNSET`` for an absent part, a JSON array as its encoded elements, anything else as its
    builtin value."""
    if not part:
        return UNSET
    if memoryview(part)[0] == ord("["):
        return raw_list_decoder.decode(part)
    return _builtin(part, param)


_ROLE_FIRST = b'{"role":'
"""How the messages of chat clients begin: mostly without a type (the openai SDK, LangChain)."""


def _item(element: msgspec.Raw, param: str) -> Item:
    # ``msgspec.convert`` into the item union costs about 30 times a decode from JSON: each
    # decoder is tried first, the message one for the messages real clients send without a type
    # (first where the item begins as theirs do: a failed decode costs an exception).
    decoders = (known_item_decoder, _message_decoder)
    if memoryview(element)[:len(_ROLE_FIRST)] == _ROLE_FIRST:
        decoders = (_message_decoder, known_item_decoder)
    for decoder in decoders:
        try:
            return cast(Item, decoder.decode(element))
        except msgspec.ValidationError:
            pass
    return _lenient_item(_builtin(element, param), param)


def _tool(element: msgspec.Raw, param: str) -> Tool:
    try:
        return _function_tool_decoder.decode(element)
    except msgspec.ValidationError:
        return _lenient_tool(_builtin(element, param), param)


def _choice(part: msgspec.Raw) -> ToolChoice | None:
    if not part:
        return None
    try:
        return cast(ToolChoice | None, _choice_decoder.decode(part))
    except msgspec.ValidationError:
        return _lenient_choice(_builtin(part, "tool_choice"))


def _builtin(element: msgspec.Raw, param: str) -> Any:
    try:
        return msgspec.json.decode(element)
    except msgspec.ValidationError as exc:  # a number no Python type holds
        raise invalid_from_validation(exc, param) from None


def _typed_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param, code="invalid_type")
    kind = value.get("type")
    if kind is not None and (not isinstance(kind, str) or not kind):
        raise InvalidRequest(f"'{param}.type' must be a non-empty string.", param=f"{param}.type",
                             code="invalid_type")
    return value


def _lenient_item(value: Any, param: str) -> Item:
    item = _typed_object(value, param)
    kind = item.get("type")
    if kind is None:
        # Real clients omit ``type`` on messages; an id alone is an item reference (spec: its type
        # is optional or null).
        if "role" in item:
            item = {**item, "type": "message"}
        elif "id" in item and item.keys() <= {"id", "type"}:
            item = {"type": "item_reference", "id": item["id"]}
        else:
            raise InvalidRequest(f"'{param}' has no 'type' and no 'role'.", param=f"{param}.type",
                                 code="missing_required_parameter")
        kind = item["type"]
    if kind not in KNOWN_ITEM_TYPES:
        return OpaqueItem(item)
    try:
        return cast(Item, msgspec.convert(item, KnownItem))
    except msgspec.ValidationError as exc:
        raise invalid_from_validation(exc, param) from None


def _lenient_tool(value: Any, param: str) -> Tool:
    tool = _typed_object(value, param)
    if tool.get("type", "function") not in ("function", None):  # a null type is absent: a function
        return OpaqueItem(tool)
    try:
        return msgspec.convert({**tool, "type": "function"}, FunctionTool)
    except msgspec.ValidationError as exc:
        raise invalid_from_validation(exc, param) from None


def _lenient_choice(value: Any) -> ToolChoice:
    # A choice without a type is no tool's: the Struct's decoder refuses it, naming the field.
    if isinstance(value, dict) and value.get("type") not in (None, "function", "allowed_tools"):
        _typed_object(value, "tool_choice")
        return OpaqueItem(value)
    try:
        return cast(ToolChoice, msgspec.convert(value, WireToolChoice))
    except msgspec.ValidationError as exc:
        raise invalid_from_validation(exc, "tool_choice") from None


def _check_tools(request: ResponseRequest) -> None:
    """Rules the schema cannot state: unique tool names, and a tool choice naming a real tool."""
    names: set[str] = set()
    for index, tool in enumerate(request.tools):
        name = tool.name if isinstance(tool, FunctionTool) else tool.data.get("name")
        if not isinstance(name, str):
            continue
        if name in names:
            raise InvalidRequest(f"Duplicate tool name '{name}'.", param=f"tools[{index}].name",
                                 code="duplicate_tool_name")
        names.add(name)
    choice = request.tool_choice
    if isinstance(choice, SpecificFunction):
        chosen = [(choice.name, "tool_choice.name")]
    elif isinstance(choice, AllowedTools):
        chosen = [(tool.name, f"tool_choice.tools[{i}].name") for i, tool in enumerate(choice.tools)]
    else:
        chosen = []
    for name, param in chosen:
        if name not in names:
            raise InvalidRequest(f"Tool choice '{name}' is not among the request's tools.", param=param,
                                 code="invalid_value")
