"""Validate what the gateway emits against the JSON Schemas in the Open Responses spec.

Every reply body and streaming event a test sees goes through ``validate_resource`` /
``validate_event`` / ``validate_stream``. Deviations we make on purpose to serve real clients are
listed in ``docs/deviations.md``; the only ones that touch validation are output items and events
of OpenAI types outside the core, which these helpers accept only when the test says so.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SHARED = Path(os.environ.get("INTERLOCK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
SPEC_PATH = SHARED / "spec" / "openresponses.openapi.json"

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@cache
def _registry() -> Registry:
    return Registry().with_resource("spec", Resource.opaque(_spec()))


@cache
def _validator(component: str) -> Draft202012Validator:
    schema = {"$ref": f"spec#/components/schemas/{component}"}
    return Draft202012Validator(schema, registry=_registry())


@cache
def _event_components() -> dict[str, str]:
    """Event ``type`` -> the component schema that describes it."""
    mapping: dict[str, str] = {}
    for name, schema in _spec()["components"]["schemas"].items():
        if not name.endswith("StreamingEvent"):
            continue
        enum = schema.get("properties", {}).get("type", {}).get("enum", [])
        for value in enum:
            mapping[value] = name
    return mapping


def _check(component: str, instance: Any) -> None:
    errors = sorted(_validator(component).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        details = "\n".join(f"  at {'/'.join(map(str, e.path)) or '$'}: {e.message[:300]}" for e in errors[:10])
        raise AssertionError(f"{component} does not match the spec:\n{details}")


def validate_resource(body: dict[str, Any], *, opaque_types: frozenset[str] = frozenset()) -> None:
    """A ``ResponseResource`` body. ``opaque_types``: OpenAI item types the test expects to pass through."""
    body = _without_opaque(body, opaque_types)
    _check("ResponseResource", body)


def _without_opaque(body: dict[str, Any], opaque_types: frozenset[str]) -> dict[str, Any]:
    """The resource minus what docs/deviations.md allows: output items of the expected opaque
    types, and a tool choice naming a non-function tool (echoed as the client sent it)."""
    if not opaque_types:
        return body
    output = [item for item in body.get("output", []) if item.get("type") not in opaque_types]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
        choice = "auto"
    return {**body, "output": output, "tool_choice": choice}


def validate_event(event: dict[str, Any], *, opaque_types: frozenset[str] = frozenset()) -> None:
    kind = event.get("type")
    component = _event_components().get(kind)  # type: ignore[arg-type]
    if component is None:
        if any(str(kind).startswith(f"response.{t}") for t in opaque_types):
            return
        raise AssertionError(f"event type {kind!r} is not in the spec")
    item = event.get("item")
    if isinstance(item, dict) and item.get("type") in opaque_types:
        return
    if isinstance(event.get("response"), dict):
        event = {**event, "response": _without_opaque(event["response"], opaque_types)}
    _check(component, event)


def validate_websocket_error(frame: dict[str, Any]) -> None:
    """A WebSocket error frame (``WebSocketErrorEvent``), sent where a response's events never started."""
    assert "sequence_number" not in frame, "a streaming error event, not a WebSocket error frame"
    _check("WebSocketErrorEvent", frame)


def validate_error_body(body: dict[str, Any]) -> None:
    """The HTTP error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error


def validate_stream(events: list[dict[str, Any]], *, opaque_types: frozenset[str] = frozenset()) -> None:
    """Every event against its schema, and the lifecycle order the spec and clients rely on."""
    assert events, "empty stream"
    for event in events:
        validate_event(event, opaque_types=opaque_types)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(len(events))), f"sequence numbers not 0..n-1: {numbers}"
    kinds = [e["type"] for e in events]
    terminal = [k for k in kinds if k in TERMINAL]
    assert len(terminal) == 1 and kinds[-1] in TERMINAL, f"need exactly one terminal event, last: {kinds}"
    if kinds[-1] == "response.failed" and kinds[0] != "response.created":
        return
    assert kinds[0] == "response.created", kinds[:3]
    assert kinds[1] == "response.in_progress", kinds[:3]
    if kinds[-1] == "response.failed":
        assert kinds[-2] == "error", "response.failed must follow an error event"
    response_ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(response_ids) == 1, f"response id changed: {response_ids}"
    _check_items(events)


def _part_key(event: dict[str, Any]) -> tuple[int, str, int]:
    if "summary_index" in event:
        return event["output_index"], "summary", event["summary_index"]
    return event["output_index"], "content", event["content_index"]


def _check_items(events: list[dict[str, Any]]) -> None:
    open_items: dict[int, str] = {}
    done_items: dict[int, dict[str, Any]] = {}
    open_parts: set[tuple[int, str, int]] = set()
    core = set(_event_components())
    for event in events:
        kind = event["type"]
        index = event.get("output_index")
        if kind == "response.output_item.added":
            assert index not in open_items and index not in done_items, f"item {index} added twice"
            assert index == len(open_items) + len(done_items), f"output_index {index} out of order"
            open_items[index] = event["item"].get("id")
        elif kind == "response.output_item.done":
            assert index in open_items, f"item {index} done without added"
            assert not any(p[0] == index for p in open_parts), f"item {index} done with open parts"
            assert event["item"].get("id") == open_items.pop(index)
            done_items[index] = event["item"]
        elif kind in ("response.content_part.added", "response.reasoning_summary_part.added"):
            assert index in open_items, f"part added to closed item {index}"
            open_parts.add(_part_key(event))
        elif kind in ("response.content_part.done", "response.reasoning_summary_part.done"):
            open_parts.remove(_part_key(event))
        elif kind in core and kind.endswith(".delta") and kind != "response.function_call_arguments.delta":
            assert _part_key(event) in open_parts, f"{kind} for a part that is not open: {_part_key(event)}"
        elif kind == "response.function_call_arguments.delta":
            assert index in open_items, f"arguments for an item that is not open: {index}"
        elif kind in ("response.completed", "response.incomplete"):
            assert not open_items, f"items never done: {open_items}"
            final = event["response"]["output"]
            assert len(final) == len(done_items), "terminal output differs from the items streamed"
            for position, item in enumerate(final):
                assert item == done_items[position], f"terminal output[{position}] differs from output_item.done"


def parse_sse(raw: str) -> tuple[list[dict[str, Any]], bool]:
    """``(events, saw_done)`` from an SSE body; asserts each ``event:`` line equals the JSON type."""
    events: list[dict[str, Any]] = []
    saw_done = False
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        event_name = None
        data_lines = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event_name = line[len("event: "):]
            elif line.startswith("data: "):
                data_lines.append(line[len("data: "):])
        data = "\n".join(data_lines)
        if data == "[DONE]":
            saw_done = True
            continue
        assert not saw_done, "event after [DONE]"
        payload = json.loads(data)
        assert event_name == payload["type"], f"event: {event_name} but type {payload['type']}"
        events.append(payload)
    return events, saw_done
