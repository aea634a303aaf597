"""The OpenAPI document the gateway publishes at ``GET /openapi.json``: every endpoint it serves,
described with the Open Responses spec's schemas (vendored beside this module, changed where the
gateway departs from them, see ``departures``) and, for the gateway's own endpoints, schemas
generated from the msgspec Structs that encode their replies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from policies.explain import Explanation
from proxy.openapi.departures import Schema, apply_departures
from proxy.routes.admin import ExplainBody, UsagePage
from proxy.schema.lifecycle import TokenCounts
from proxy.schema.response import DeletedResponse, ModelList, ModelObject

SPEC_PATH = Path(__file__).with_name("openresponses.openapi.json")
_OWN_STRUCTS = (DeletedResponse, ModelList, ModelObject, TokenCounts, UsagePage, ExplainBody, Explanation)
_ERRORS = {"4XX": {"$ref": "#/components/responses/Error"}, "5XX": {"$ref": "#/components/responses/Error"}}

_DESCRIPTION = """\
interlock serves the Open Responses API to the teams of an organisation and routes each request to
a deployment of its model catalogue. Every request but health, metrics and this document carries
`Authorization: Bearer <team key>`; a team never sees another team's responses or items (404, as
for ids that do not exist). Every reply carries `x-request-id`; every error is the envelope
`{"error": {"message", "type", "param", "code"}}` with `x-should-retry`, and `retry-after` where it
helps. Where the gateway departs from the spec's schemas to serve real clients, the schemas here say
what it accepts; docs/deviations.md lists each departure."""

_WEBSOCKET = """\
`GET /v1/responses` with `Upgrade: websocket` opens the WebSocket transport: each text frame is a
`WebSocketResponseCreateEvent`, answered with the same events as the SSE stream, one JSON text frame
each; a refused frame gets a `WebSocketErrorEvent`. Authentication is the `Authorization` header of
the upgrade request (docs/websocket.md)."""


def _ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _reply(description: str, content: Schema, **headers: Schema) -> dict[str, Any]:
    """The operation's ``responses``: the 200 and the error envelope."""
    ok: Schema = {"description": description, "content": content}
    if headers:
        ok["headers"] = headers
    return {"200": ok, **_ERRORS}


def _header(description: str) -> Schema:
    return {"description": description, "schema": {"type": "string"}}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _operation(operation_id: str, summary: str, responses: dict[str, Any], *, body: Schema | None = None,
               parameters: list[Schema] | None = None, security: list[dict[str, list[str]]] | None = None,
               description: str | None = None, links: Schema | None = None) -> Schema:
    operation: Schema = {"operationId": operation_id, "summary": summary, "responses": responses}
    if links:
        responses["200"]["links"] = links
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    if security is not None:
        operation["security"] = security
    return operation


_FOLLOW_UPS = {"GetResponse": "getResponse", "DeleteResponse": "deleteResponse", "CancelResponse": "cancelResponse",
               "ListInputItems": "listInputItems"}
"""Operations that take the id of a created response (OpenAPI links)."""


def _links() -> Schema:
    return {name: {"operationId": operation, "parameters": {"response_id": "$response.body#/id"}}
            for name, operation in _FOLLOW_UPS.items()}


def _paths(events: Schema, websocket: Schema) -> dict[str, Any]:
    resource = _json(_ref("ResponseResource"))
    sse = {"text/event-stream": {"schema": _server_sent_event(events)}}
    response_id = _ref("ResponseId", "parameters")
    routed = {"x-interlock-deployment": _header("The catalogue deployment that served the request."),
              "x-interlock-attempts": _header("Upstream attempts the request took."),
              "x-interlock-overhead-ms": _header("Time the gateway itself spent on the request.")}
    return {
        "/v1/responses": {
            "post": _operation("createResponse", "Create a response", _reply(
                "The response, or with `stream: true` its events (the `Accept` header is ignored); with "
                "`background: true` the queued response.", {**resource, **sse}, **routed),
                body=_ref("CreateResponseBody"), links=_links()),
            "description": _WEBSOCKET,
            "x-openresponses-websocket": websocket,
        },
        "/v1/responses/{response_id}": {
            "parameters": [response_id],
            "get": _operation("getResponse", "Retrieve a stored response", _reply(
                "The response, or with `stream=true` a background response's events.", {**resource, **sse}),
                parameters=[
                    _query("stream", {"type": "boolean"}, "Stream a background response's events."),
                    _query("starting_after", {"type": "integer", "minimum": 0},
                           "With `stream=true`: the events after this sequence number.")]),
            "delete": _operation("deleteResponse", "Delete a stored response",
                                 _reply("Deleted.", _json(_ref("DeletedResponse")))),
        },
        "/v1/responses/{response_id}/cancel": {
            "parameters": [response_id],
            "post": _operation("cancelResponse", "Cancel a background response",
                               _reply("The response, now `cancelled`.", resource)),
        },
        "/v1/responses/{response_id}/input_items": {
            "parameters": [response_id],
            "get": _operation("listInputItems", "List a response's input items", _reply(
                "A page of input items.", _json(_ref("ItemList"))), parameters=[
                    _query("limit", {"type": "integer", "minimum": 0, "maximum": 100, "default": 20}, "Page size."),
                    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "Item order."),
                    _query("after", {"type": "string"}, "The id of the item before the page.")]),
        },
        "/v1/responses/compact": {
            "post": _operation("compactResponse", "Compact a conversation", _reply(
                "The compacted conversation.", _json(_ref("CompactResource"))),
                body=_ref("CompactResponseMethodPublicBody")),
        },
        "/v1/responses/input_tokens": {
            "post": _operation("getInputTokenCounts", "Count a request's input tokens", _reply(
                "The count.", _json(_ref("TokenCounts")),
                **{"x-interlock-token-count": _header("`provider` (the upstream counted) or `estimate`.")}),
                body=_ref("CreateResponseBody")),
        },
        "/v1/models": {"get": _operation("listModels", "List the models the caller may use",
                                         _reply("The models.", _json(_ref("ModelList"))))},
        "/v1/models/{model_id}": {"get": _operation("retrieveModel", "Retrieve a model", _reply(
            "The model.", _json(_ref("ModelObject"))), parameters=[
                {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/v1/usage": {"get": _operation("listUsage", "Usage records of a team", _reply(
            "The records, newest first.", _json(_ref("UsagePage"))), parameters=[
                _query("team", {"type": "string"}, "The team; required with an admin key."),
                _query("start", {"type": "number", "minimum": 0}, "Unix time; default a day before `end`."),
                _query("end", {"type": "number", "minimum": 0}, "Unix time; default now."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size.")],
            description="A team key reads its own team's records; an admin key reads any team's.")},
        "/v1/policy/explain": {"post": _operation("explainPolicy", "Explain where a request would be routed", _reply(
            "The decision and why.", _json(_ref("Explanation"))), body=_ref("ExplainBody"),
            description="Admin keys only.")},
        "/healthz": {"get": _operation("healthz", "Liveness", _reply("Alive.", _json(_status("ok"))), security=[])},
        "/readyz": {"get": _operation("readyz", "Readiness: the store answers", {
            "200": {"description": "Ready.", "content": _json(_status("ready"))},
            "503": {"description": "The store does not answer.", "content": _json(_status("unavailable"))}},
            security=[])},
        "/metrics": {"get": _operation("metrics", "Prometheus metrics", _reply(
            "The text exposition format.", {"text/plain": {"schema": {"type": "string"}}}),
            security=[{}, {"ApiKeyAuth": []}],
            description="Open unless `telemetry.metrics_public` is false; then an admin key is needed.")},
        "/openapi.json": {"get": _operation("openapi", "This document", _reply(
            "The OpenAPI document.", _json({"type": "object"})), security=[])},
    }


def _server_sent_event(events: Schema) -> Schema:
    """One event of an SSE stream, which is what ``schema`` describes for ``text/event-stream``
    before OpenAPI 3.2: ``event`` names the type and ``data`` holds the event as JSON; the stream
    ends with ``data: [DONE]``."""
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": events}
    return {"anyOf": [
        {"type": "object", "required": ["event", "data"], "properties": {"event": {"type": "string"}, "data": data}},
        {"type": "object", "required": ["data"], "properties": {"data": {"const": "[DONE]"}}},
    ]}


def _status(value: str) -> Schema:
    return {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": [value]}}}


def _gateway_components() -> dict[str, Schema]:
    """Schemas of the gateway's own replies and bodies, from the Structs that encode them."""
    _, schemas = msgspec.json.schema_components(_OWN_STRUCTS, ref_template="#/components/schemas/{name}")
    schemas["ExplainBody"]["properties"]["request"] = {
        "description": "A `POST /v1/responses` body, as the team would send it; one the gateway would refuse "
                       "is explained as refused."}
    schemas["ItemList"] = {
        "type": "object", "required": ["object", "data", "first_id", "last_id", "has_more"], "properties": {
            "object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _ref("ItemField")},
            "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"}}}
    schemas["ErrorResponse"] = {"type": "object", "required": ["error"], "additionalProperties": False,
                                "properties": {"error": _ref("ErrorPayload")}}
    return schemas


def _map_discriminators(node: Any, schemas: dict[str, Schema]) -> None:
    """Give every discriminated union of the document its ``mapping``, and take the discriminator
    off a union where a ``type`` value does not name one branch (the four message roles; the
    opaque types). Without a mapping, OpenAPI reads the value as a schema's name, which the
    spec's ``message``, ``function_call``... are not."""
    if isinstance(node, list):
        for value in node:
            _map_discriminators(value, schemas)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _map_discriminators(value, schemas)
    if "discriminator" not in node:
        return
    branches = node.get("oneOf") or node.get("anyOf") or [node]
    mapping: dict[str, str] = {}
    for branch in branches:
        ref = branch.get("$ref", "")
        values = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}).get("type", {}).get("enum", [])
        if len(values) != 1 or values[0] in mapping:
            del node["discriminator"]
            return
        mapping[values[0]] = ref
    node["discriminator"]["mapping"] = mapping


def build_document() -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text())
    schemas: dict[str, Schema] = spec["components"]["schemas"]
    apply_departures(schemas)
    own = _gateway_components()
    clash = set(own) & set(schemas)
    if clash:
        raise RuntimeError(f"gateway schemas would replace the spec's: {sorted(clash)}")
    schemas.update(own)
    create = spec["paths"]["/responses"]
    events = create["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    _map_discriminators([schemas, events], schemas)
    return {
        "openapi": spec["openapi"],
        "info": {"title": "interlock", "version": spec["info"]["version"], "description": _DESCRIPTION,
                 "x-open-responses-version": spec["info"]["version"]},
        "servers": [{"url": "/"}],
        "security": [{"ApiKeyAuth": []}],
        "paths": _paths(events, create["x-openresponses-websocket"]),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"ApiKeyAuth": {"type": "http", "scheme": "bearer",
                                               "description": "A team key, or an admin key (`admin_keys`)."}},
            "parameters": {"ResponseId": {"name": "response_id", "in": "path", "required": True,
                                          "schema": {"type": "string"}}},
            "responses": {"Error": {
                "description": "The error envelope.", "content": _json(_ref("ErrorResponse")),
                "headers": {"x-request-id": {**_header("The request's id."), "required": True},
                            "x-should-retry": {**_header("`true` where a retry may help."), "required": True},
                            "retry-after": _header("Seconds to wait before retrying.")}}},
        },
    }
