"""The spec's component schemas, changed to say what the gateway accepts and returns where it
departs from them. Each change is a row of docs/deviations.md (the one list of departures);
value lists come from the decoder's own types, so the document cannot drift from what it reads.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from proxy.schema import content, items, lifecycle, request
from proxy.schema.codec import KNOWN_ITEM_TYPES
from proxy.schema.request import IncludeValue, ReasoningEffort

Schema = dict[str, Any]

_MESSAGE_PARAMS = ("UserMessageItemParam", "SystemMessageItemParam", "DeveloperMessageItemParam",
                   "AssistantMessageItemParam")
_SAMPLING_BOUNDS = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2),
                    "frequency_penalty": (-2, 2)}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _other_type(excluded: list[str], description: str) -> Schema:
    """An object whose ``type`` is any non-empty string but the ``excluded`` ones."""
    return {"type": "object", "required": ["type"], "description": description,
            "properties": {"type": {"type": "string", "minLength": 1, "not": {"enum": excluded}}}}


_DECODED_BY: dict[str, type[msgspec.Struct]] = {
    "CreateResponseBody": request.CreateResponseBody, "CompactResponseMethodPublicBody": lifecycle.CompactRequestBody,
    "TextParam": request.TextParam, "ReasoningParam": request.ReasoningParam,
    "StreamOptionsParam": request.StreamOptions,
    "JsonSchemaResponseFormatParam": request.TextFormatJsonSchema, "FunctionToolParam": request.FunctionTool,
    "AllowedToolsParam": request.AllowedTools, "SpecificFunctionParam": request.SpecificFunction,
    **dict.fromkeys(_MESSAGE_PARAMS, items.Message), "FunctionCallItemParam": items.FunctionCall,
    "FunctionCallOutputItemParam": items.FunctionCallOutput, "ReasoningItemParam": items.Reasoning,
    "CompactionSummaryItemParam": items.Compaction, "InputTextContentParam": content.InputText,
    "InputImageContentParamAutoParam": content.InputImage, "InputFileContentParam": content.InputFile,
    "InputVideoContent": content.InputVideo, "OutputTextContentParam": content.OutputText,
    "RefusalContentParam": content.Refusal, "UrlCitationParam": content.UrlCitation,
    "ReasoningSummaryContentParam": content.SummaryText,
}
"""The request schemas of the spec, and the Struct the gateway decodes each into."""


def _nullable(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(isinstance(member, msgspec.inspect.NoneType) for member in kind.types)
    return isinstance(kind, msgspec.inspect.NoneType)


def _without_null(schema: Schema) -> Schema:
    for union in ("anyOf", "oneOf"):
        branches = [branch for branch in schema.get(union, []) if branch.get("type") != "null"]
        if len(branches) == 1:
            rest = {key: value for key, value in schema.items() if key != union}
            return {**branches[0], **rest}
    return schema


def _follow_decoder(schemas: dict[str, Schema]) -> None:
    """Which fields a request schema requires, and which take ``null``, as the gateway's Structs
    decode them: a field with a default is optional, and ``null`` is accepted where the field's
    type holds ``None`` (as absent) and refused where it does not."""
    for name, struct in _DECODED_BY.items():
        schema = schemas[name]
        properties = schema["properties"]
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        fields = {field.encode_name: field for field in info.fields}
        required = [key for key in schema.get("required", []) if key not in fields or fields[key].required]
        schema.pop("required", None)
        if required:
            schema["required"] = required
        for key, field in fields.items():
            if key not in properties:
                continue
            if _nullable(field.type):
                if not _allows_null(properties[key]):
                    properties[key] = {"anyOf": [properties[key], {"type": "null"}]}
            else:
                properties[key] = _without_null(properties[key])


def _type_optional(schema: Schema) -> None:
    """``type`` may be left out or ``null``."""
    schema["required"].remove("type")
    schema["properties"]["type"] = {"anyOf": [schema["properties"]["type"], {"type": "null"}]}


def _allows_null(schema: Schema) -> bool:
    return schema.get("type") == "null" or any(branch.get("type") == "null"
                                               for branch in schema.get("anyOf", []) + schema.get("oneOf", []))


def apply_departures(schemas: dict[str, Schema]) -> None:
    """Change the spec's ``components.schemas`` in place."""
    _follow_decoder(schemas)
    # ``model`` is required: which deployment serves a request depends on it.
    model = {"type": "string", "minLength": 1, "description": "A model alias of the gateway's catalogue."}
    for name in ("CreateResponseBody", "CompactResponseMethodPublicBody"):
        schemas[name]["properties"]["model"] = model
        schemas[name]["required"] = ["model"]

    # OpenAI's values of these enums are accepted (``minimal``; ``include`` values forwarded to OpenAI).
    schemas["ReasoningEffortEnum"]["enum"] = list(get_args(ReasoningEffort))
    schemas["IncludeEnum"]["enum"] = list(get_args(IncludeValue))
    # ``text.format: json_object`` in a request.
    schemas["TextFormatParam"]["oneOf"].append(_ref("JsonObjectResponseFormat"))

    # Items: messages without ``type`` or with a null one (``role`` says what they are), a
    # reference as ``{"id"}`` alone, and item types outside the core (forwarded to OpenAI
    # upstreams, 400 elsewhere). A typeless message with an ``id`` also reads as a reference, so
    # the union is ``anyOf``.
    for name in _MESSAGE_PARAMS:
        _type_optional(schemas[name])
    schemas["OpaqueItemParam"] = _other_type(sorted(KNOWN_ITEM_TYPES), "An item type outside the core.")
    item_param = schemas["ItemParam"]
    item_param["anyOf"] = [*item_param.pop("oneOf"), _ref("OpaqueItemParam")]

    # Tools: a function tool without ``type`` or with a null one, and tool types outside the core.
    _type_optional(schemas["FunctionToolParam"])
    schemas["OpaqueToolParam"] = _other_type(["function"], "A tool type outside the core (`custom`, `web_search`...).")
    tool_param = schemas["ResponsesToolParam"]
    tool_param["anyOf"] = [{"$ref": tool_param.pop("$ref")}, _ref("OpaqueToolParam")]

    # A tool choice naming a tool type outside the core, accepted and echoed as sent.
    schemas["OpaqueToolChoice"] = _other_type(["function", "allowed_tools"],
                                              "A choice of a tool type outside the core.")
    schemas["ToolChoiceParam"]["oneOf"].append(_ref("OpaqueToolChoice"))
    echo = schemas["ResponseResource"]["properties"]["tool_choice"]
    schemas["ResponseResource"]["properties"]["tool_choice"] = {"anyOf": [echo, _ref("OpaqueToolChoice")]}

    # Output items of types outside the core, passed through from OpenAI upstreams.
    schemas["OpaqueItem"] = _other_type(sorted(KNOWN_ITEM_TYPES), "An OpenAI item type outside the core.")
    schemas["ItemField"]["oneOf"].append(_ref("OpaqueItem"))
    # A tool output's ``input_video`` part, which the request schema takes, is listed as it came.
    schemas["FunctionCallOutput"]["properties"]["output"]["oneOf"][1]["items"]["oneOf"].append(_ref("InputVideoContent"))

    # WebSocket frames: ``stream`` and ``stream_options`` accepted and ignored, ``generate: false`` warms up.
    frame = schemas["WebSocketResponseCreateEvent"]["allOf"][0]["properties"]
    frame["stream"] = {"type": "boolean", "description": "Accepted and ignored: a WebSocket turn always streams."}
    frame["stream_options"] = {"description": "Accepted and ignored."}
    frame["generate"] = {"type": "boolean", "description": "`false`: a warm-up that calls no model."}

    # Tags: a ``json_schema`` format must name its type (it is one of a union); a citation may
    # leave it out (it is the only annotation type).
    schemas["JsonSchemaResponseFormatParam"]["required"] = ["type"]
    schemas["UrlCitationParam"]["required"].remove("type")

    # Bounds the spec states in prose only; the gateway enforces them.
    body = schemas["CreateResponseBody"]["properties"]
    for field, (low, high) in _SAMPLING_BOUNDS.items():
        number = next(branch for branch in body[field]["anyOf"] if branch.get("type") == "number")
        number.update(minimum=low, maximum=high)
    schemas["MetadataParam"]["propertyNames"] = {"maxLength": 64}
