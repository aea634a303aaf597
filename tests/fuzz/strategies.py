"""Hypothesis strategies for hostile create bodies: any JSON, bodies whose fields hold any JSON,
items and tools of known and unknown types, and byte-level damage (deep nesting, bytes that are
not UTF-8, numbers no type holds)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import strategies as st

from proxy.schema.codec import KNOWN_ITEM_TYPES
from proxy.schema.request import CreateResponseBody

BODY_FIELDS = [field.name for field in msgspec.structs.fields(CreateResponseBody)]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
"""Any JSON value, small."""

_types = st.sampled_from(sorted(KNOWN_ITEM_TYPES)) | st.sampled_from(["custom_tool_call", "web_search_call", ""])
_item_fields = st.dictionaries(st.sampled_from(["role", "content", "id", "call_id", "name", "arguments", "output",
                                               "summary", "encrypted_content", "status"]), json_values, max_size=4)


def _typed(fields: dict[str, Any], kind: str | None) -> dict[str, Any]:
    return fields if kind is None else {**fields, "type": kind}


items = st.builds(_typed, _item_fields, st.none() | _types) | json_values
tools = st.fixed_dictionaries({"type": st.sampled_from(["function", "custom", "web_search", "zzz"])},
                              optional={"name": st.text(max_size=10), "parameters": json_values})


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    return {"model": "sim", "input": "hi", **fields}


bodies = st.one_of(
    st.dictionaries(st.sampled_from(BODY_FIELDS), json_values, max_size=5).map(_body),
    st.lists(items, max_size=4).map(lambda listed: _body({"input": listed})),
    st.lists(tools, max_size=3).map(lambda listed: _body({"tools": listed})),
    json_values.map(lambda value: _body({"tool_choice": value})),
)
"""Create bodies for the ``sim`` model whose other fields hold anything."""


def nested_body(depth: int, where: str) -> bytes:
    """A create body with ``depth`` nested arrays at ``where``."""
    deep = "[" * depth + "]" * depth
    spots = {"input": f'"input": [{{"role": "user", "content": {deep}}}]',
             "tools": f'"input": "hi", "tools": [{{"type": "function", "name": "f", "parameters": {{"a": {deep}}}}}]',
             "unknown": f'"input": "hi", "unknown_field": {deep}', "metadata": f'"input": "hi", "metadata": {deep}'}
    return ('{"model": "sim", ' + spots[where] + "}").encode()


def _damaged(body: dict[str, Any], damage: bytes, at: int) -> bytes:
    """``body`` with ``damage`` inside one of its strings."""
    raw = json.dumps(body).encode()
    quotes = [i for i, byte in enumerate(raw) if byte == ord('"')]
    cut = quotes[at % len(quotes)] + 1
    return raw[:cut] + damage + raw[cut:]


raw_bodies = st.one_of(
    bodies.map(lambda body: json.dumps(body).encode()),
    st.builds(nested_body, st.integers(min_value=1, max_value=5000), st.sampled_from(["input", "tools", "unknown",
                                                                                  "metadata"])),
    st.builds(_damaged, bodies, st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\\ud800", b"\x00", b"\\"]),
              st.integers(min_value=0)),
    st.sampled_from([b'{"model": "sim", "input": "hi", "max_output_tokens": 1' + b"0" * 5000 + b"}",
                     b'{"model": "sim", "input": "hi", "temperature": 1e999}',
                     b'{"model": "sim", "input": "hi", "top_logprobs": -1' + b"0" * 30 + b"}"]),
    st.binary(max_size=64),
)
"""Create bodies as bytes, many of them damaged."""
