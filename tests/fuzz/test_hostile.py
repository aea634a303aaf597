"""Deliberately hostile requests (issue #9): deep nesting, huge strings, many items, bytes that
are not UTF-8, duplicate keys, wrong content types, oversized headers, slow headers and bodies,
request smuggling, unknown item and tool types, and ids of other teams' data. Each gets a clear
answer in the envelope, or, below HTTP, a refusal; never a 5xx, a hang or a leak."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.sync.client import connect

from tests.fuzz.conftest import ADMIN_KEY, BODY_TIMEOUT_S, HEADER_TIMEOUT_S
from tests.fuzz.strategies import nested_body
from tests.gateway_server import TEAM_A_KEY, TEAM_B_KEY, RunningGateway, gateway_settings, serve
from tests.spec_validation import validate_error_body, validate_resource, validate_websocket_error

JSON_ENDPOINTS = ["/v1/responses", "/v1/responses/input_tokens", "/v1/responses/compact"]


@pytest.fixture(scope="module")
def team_a(fuzzed: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.base_url, headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
                      timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def team_b(fuzzed: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzzed.base_url, headers={"Authorization": f"Bearer {TEAM_B_KEY}"},
                      timeout=60) as client:
        yield client


def _error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text[:300]
    data = reply.json()
    validate_error_body(data)
    return dict(data["error"])


# -- the body -----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
@pytest.mark.parametrize("where", ["input", "tools", "unknown", "metadata"])
def test_deep_nesting(team_a: httpx.Client, endpoint: str, where: str) -> None:
    reply = team_a.post(endpoint, content=nested_body(100_000, where), headers={"content-type": "application/json"})
    assert _error(reply, 400)["code"] == "invalid_json"


def test_deep_nesting_in_an_explained_request(fuzzed: RunningGateway) -> None:
    raw = b'{"team": "team-a", "request": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = httpx.post(fuzzed.base_url + "/v1/policy/explain", content=raw,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert _error(reply, 400)["code"] == "invalid_json"


def test_deep_nesting_in_a_websocket_frame(fuzzed: RunningGateway) -> None:
    url = fuzzed.base_url.replace("http://", "ws://") + "/v1/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {TEAM_A_KEY}"}) as socket_:
        socket_.send(nested_body(100_000, "input").decode().replace('{"model"', '{"type": "response.create", "model"'))
        frame = json.loads(socket_.recv(timeout=10))
        validate_websocket_error(frame)
        assert frame["error"]["code"] == "invalid_json"
        socket_.send(json.dumps({"type": "response.create", "model": "sim", "input": "still here?"}))
        assert json.loads(socket_.recv(timeout=10))["type"] == "response.created"


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_string_that_is_not_utf8(team_a: httpx.Client, endpoint: str) -> None:
    reply = team_a.post(endpoint, content=b'{"model": "sim", "input": "\xff\xfe"}',
                        headers={"content-type": "application/json"})
    assert _error(reply, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(("field", "status"), [("model", 404), ("previous_response_id", 404),
                                               ("safety_identifier", 400), ("instructions", 200)])
def test_huge_strings(team_a: httpx.Client, field: str, status: int) -> None:
    reply = team_a.post("/v1/responses", json={"model": "sim", "input": "hi", field: "x" * 1_000_000})
    assert reply.status_code == status, reply.text[:300]
    if status == 200:
        validate_resource(reply.json())
    else:
        validate_error_body(reply.json())


def test_body_over_the_limit(team_a: httpx.Client, fuzzed: RunningGateway) -> None:
    over = team_a.post("/v1/responses", json={"model": "sim", "input": "x" * fuzzed.settings.max_body_bytes})
    assert _error(over, 413)["code"] == "payload_too_large"


def test_many_items_and_tools(team_a: httpx.Client) -> None:
    tools = [{"type": "function", "name": f"f{i}"} for i in range(2000)]
    items = [{"role": "user", "content": "x"}] * 20_000
    started = time.monotonic()
    validate_resource(team_a.post("/v1/responses", json={"model": "sim", "input": items, "tools": tools}).json())
    assert time.monotonic() - started < 30


def test_duplicate_keys_the_last_one_wins(team_a: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    reply = team_a.post("/v1/responses", content=b'{"model": "nope", "model": "sim", "input": "hi"}', headers=headers)
    assert reply.status_code == 200, reply.text[:300]
    validate_resource(reply.json())
    reply = team_a.post("/v1/responses", content=b'{"model": "sim", "model": "nope", "input": "hi"}', headers=headers)
    assert _error(reply, 404)["code"] == "model_not_found"


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml"])
def test_wrong_content_type(team_a: httpx.Client, endpoint: str, content_type: str) -> None:
    reply = team_a.post(endpoint, content=b'{"model": "sim", "input": "hi"}', headers={"content-type": content_type})
    assert _error(reply, 415)["code"] == "unsupported_media_type"


UNKNOWN_TYPES = [({"input": [{"role": "user", "content": "hi"}, {"type": "zzz_unknown", "x": 1}]}, "input[1]"),
                 ({"input": "hi", "tools": [{"type": "zzz_unknown"}]}, "tools[0]")]


@pytest.mark.parametrize(("fields", "param"), UNKNOWN_TYPES)
def test_unknown_item_and_tool_types(team_a: httpx.Client, fields: dict[str, Any], param: str) -> None:
    """Passed through to an OpenAI Responses upstream (docs/deviations.md); refused by name elsewhere."""
    refused = team_a.post("/v1/responses", json={"model": "sim-chat", **fields})
    assert _error(refused, 400)["param"] == param
    passed = team_a.post("/v1/responses", json={"model": "sim", **fields})
    assert passed.status_code == 200, passed.text[:300]
    validate_resource(passed.json())


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS[1:])
@pytest.mark.parametrize("model", ["sim", "sim-chat"])
@pytest.mark.parametrize(("fields", "param"), UNKNOWN_TYPES)
def test_unknown_types_counted_or_compacted(team_a: httpx.Client, endpoint: str, model: str,
                                            fields: dict[str, Any], param: str) -> None:
    """Counting and compaction read such items as text; a refusal names the item."""
    reply = team_a.post(endpoint, json={"model": model, **fields})
    assert reply.status_code in (200, 400), reply.text[:300]
    if reply.status_code == 400:
        assert _error(reply, 400)["param"] == param


# -- other teams' data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def team_b_response(team_b: httpx.Client) -> dict[str, Any]:
    reply = team_b.post("/v1/responses", json={"model": "sim", "input": "team b's secret"})
    assert reply.status_code == 200, reply.text[:300]
    created: dict[str, Any] = reply.json()
    validate_resource(created)
    return created


def _same_as_missing(team_a: httpx.Client, method: str, path: str, theirs: str, **kw: Any) -> None:
    """Another team's id gets the answer a made-up id gets: 404, the same body but for the id."""
    missing = f"{theirs[:5]}{uuid.uuid4().hex}"
    replies = [team_a.request(method, path.format(id=id_), **json.loads(json.dumps(kw).replace("{id}", id_)))
               for id_ in (theirs, missing)]
    errors = [_error(reply, 404) for reply in replies]
    assert json.dumps(errors[0]).replace(theirs, "ID") == json.dumps(errors[1]).replace(missing, "ID")
    assert "secret" not in replies[0].text


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/responses/{id}"), ("DELETE", "/v1/responses/{id}"),
                                              ("POST", "/v1/responses/{id}/cancel"),
                                              ("GET", "/v1/responses/{id}/input_items"),
                                              ("GET", "/v1/responses/{id}?stream=true")])
def test_another_teams_response(team_a: httpx.Client, team_b: httpx.Client, team_b_response: dict[str, Any],
                                method: str, path: str) -> None:
    _same_as_missing(team_a, method, path, team_b_response["id"])
    assert team_b.get(f"/v1/responses/{team_b_response['id']}").status_code == 200


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_another_teams_previous_response(team_a: httpx.Client, team_b_response: dict[str, Any],
                                         endpoint: str) -> None:
    body = {"model": "sim", "input": "hi", "previous_response_id": "{id}"}
    _same_as_missing(team_a, "POST", endpoint, team_b_response["id"], json=body)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_another_teams_item_reference(team_a: httpx.Client, team_b_response: dict[str, Any], endpoint: str) -> None:
    body = {"model": "sim", "input": [{"type": "item_reference", "id": "{id}"}]}
    _same_as_missing(team_a, "POST", endpoint, team_b_response["output"][0]["id"], json=body)


# -- below HTTP: raw sockets -----------------------------------------------------------------------


def _raw(gateway: RunningGateway, data: bytes, *, timeout: float = 5.0) -> bytes:
    """What the gateway answers ``data`` with, up to its closing the connection or ``timeout``."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
        return received


def _statuses(reply: bytes) -> list[int]:
    """The status of each response in ``reply`` (a pipelined one follows the last body directly)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]


def _still_serving(gateway: RunningGateway) -> None:
    assert httpx.get(gateway.base_url + "/healthz").status_code == 200


def _trickle(sock: socket.socket, byte: bytes, within: float) -> tuple[bytes, bool, float]:
    """Send ``byte`` every 0.2 s, as slowloris does, until the gateway closes the connection or
    ``within`` seconds pass: what it answered, whether it closed, and after how many seconds."""
    sock.settimeout(0.2)
    started = time.monotonic()
    received, closed = b"", False
    while not closed and time.monotonic() - started < within:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            sock.sendall(byte)
            continue
        received += chunk
        closed = not chunk
    return received, closed, time.monotonic() - started


def _assert_refusal(reply: bytes, status: int, code: str) -> None:
    """``reply`` is one ``status`` in the error envelope, closing its connection."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert _statuses(head) == [status], reply[:300]
    assert b"\r\nconnection: close" in head.lower()
    error = json.loads(body)
    validate_error_body(error)
    assert error["error"]["code"] == code


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` and read the one response to it (the gateway's carry a content-length)."""
    sock.sendall(request)
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _content_length(reply):
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {reply[:300]!r}"
        reply += chunk
    return reply


def _content_length(reply: bytes) -> int:
    found = re.search(rb"\r\ncontent-length: (\d+)\r\n", reply.partition(b"\r\n\r\n")[0], re.IGNORECASE)
    assert found, reply[:300]
    return int(found.group(1))


@pytest.mark.parametrize(("path", "key", "first"), [
    ("/v1/responses", TEAM_A_KEY, b"{"),
    ("/v1/responses", TEAM_A_KEY, b""),  # the head alone in its packet, the body's deadline from it
    ("/v1/responses/input_tokens", TEAM_A_KEY, b"{"),
    ("/v1/policy/explain", ADMIN_KEY, b"{"),
], ids=["create", "head-alone", "input-tokens", "explain"])
def test_slow_body_gets_408_and_its_connection_closed(fuzzed: RunningGateway, caplog: pytest.LogCaptureFixture,
                                                      path: str, key: str, first: bytes) -> None:
    head = (b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" % (path.encode(), key.encode()))
    address = ("127.0.0.1", fuzzed.port)
    with caplog.at_level(logging.INFO, logger="interlock.http"), socket.create_connection(address) as sock:
        sock.sendall(head)
        if first:
            time.sleep(0.05)
            sock.sendall(first)
        received, closed, elapsed = _trickle(sock, b" ", BODY_TIMEOUT_S + 4)
    assert closed, "the connection stayed open under a trickled body"
    assert elapsed < BODY_TIMEOUT_S + 2
    _assert_refusal(received, 408, "request_timeout")
    # The handler left waiting for the body hears the client left: no server error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    _still_serving(fuzzed)


def test_a_declared_length_over_the_limit_is_refused_before_the_body(fuzzed: RunningGateway) -> None:
    over = fuzzed.settings.max_body_bytes + 1
    head = (b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TEAM_A_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{" % over)
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=BODY_TIMEOUT_S / 2) as sock:
        sock.sendall(head)
        reply = sock.recv(65536)  # at once: nothing more of the body is awaited
    head, _, body = reply.partition(b"\r\n\r\n")
    assert _statuses(head) == [413]
    validate_error_body(json.loads(body))
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_websocket_outlives_the_body_deadline(fuzzed: RunningGateway) -> None:
    """The body's deadline is an HTTP request's: an upgraded connection has none."""
    url = fuzzed.base_url.replace("http://", "ws://") + "/v1/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {TEAM_A_KEY}"}) as socket_:
        time.sleep(BODY_TIMEOUT_S * 1.5)
        socket_.send(json.dumps({"type": "response.create", "model": "sim", "input": "still here?"}))
        assert json.loads(socket_.recv(timeout=10))["type"] == "response.created"


def test_body_sent_in_pieces_within_the_deadline(fuzzed: RunningGateway) -> None:
    body = json.dumps({"model": "sim", "input": "hi"}).encode()
    head = (b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + TEAM_A_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        sock.sendall(head)
        for piece in (body[:5], body[5:15], body[15:]):
            time.sleep(BODY_TIMEOUT_S / 5)
            sock.sendall(piece)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert _statuses(reply) == [200]


def test_client_leaving_mid_body_is_no_server_error(fuzzed: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    head = (b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TEAM_A_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\"")
    with caplog.at_level(logging.INFO, logger="interlock.http"):
        with socket.create_connection(("127.0.0.1", fuzzed.port)) as sock:
            sock.sendall(head)
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while not any("client_closed_request" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the departure was never logged"
            time.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    _still_serving(fuzzed)


_PROBE = b"/v1/responses/resp_smuggled_probe"
_SMUGGLED = b"GET " + _PROBE + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TEAM_A_KEY.encode() + b"\r\n\r\n"


def _post(headers: bytes, body: bytes) -> bytes:
    return b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


SMUGGLING = {
    "CL.TE": _post(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (5 + len(_SMUGGLED)),
                   b"0\r\n\r\n" + _SMUGGLED),
    "TE.CL": _post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                   b"%x\r\n" % len(_SMUGGLED) + _SMUGGLED + b"\r\n0\r\n\r\n"),
    "CL.CL": _post(b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(_SMUGGLED), _SMUGGLED),
    "TE obfuscated": _post(b"Transfer-Encoding: xchunked\r\nContent-Length: %d\r\n" % (5 + len(_SMUGGLED)),
                           b"0\r\n\r\n" + _SMUGGLED),
    "TE twice": _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n" + _SMUGGLED),
    "TE with space": _post(b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n" % (5 + len(_SMUGGLED)),
                           b"0\r\n\r\n" + _SMUGGLED),
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_request_smuggling(fuzzed: RunningGateway, name: str) -> None:
    """Ambiguous framing is refused with 400 before any request runs; the bytes after it never
    become a second request."""
    reply = _raw(fuzzed, SMUGGLING[name])
    assert _statuses(reply) == [400], reply[:300]
    assert _PROBE not in reply and b"resp_smuggled_probe" not in reply
    _still_serving(fuzzed)


def test_pipelined_requests_are_each_answered(fuzzed: RunningGateway) -> None:
    """The control of ``test_request_smuggling``: two well-framed requests get two answers."""
    last = _SMUGGLED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    reply = _raw(fuzzed, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + last)
    assert _statuses(reply) == [200, 404]
    assert b"resp_smuggled_probe" in reply


# -- below HTTP: the request head (proxy/header_guard.py) --------------------------------------------

OVERSIZED_HEADERS = {
    "100 KiB header": b"X-Big: " + b"a" * 100 * 1024 + b"\r\n",
    "one huge header": b"X-Big: " + b"a" * 1_000_000 + b"\r\n",
    "ten thousand headers": b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)),
}


@pytest.mark.parametrize("name", list(OVERSIZED_HEADERS))
def test_oversized_headers_get_431_and_their_connection_closed(fuzzed: RunningGateway, name: str) -> None:
    reply = _raw(fuzzed, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + OVERSIZED_HEADERS[name] + b"\r\n")
    _assert_refusal(reply, 431, "request_header_fields_too_large")
    _still_serving(fuzzed)


def test_huge_url_gets_431(fuzzed: RunningGateway) -> None:
    path = b"/v1/responses/" + b"a" * 1_000_000
    reply = _raw(fuzzed, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    _assert_refusal(reply, 431, "request_header_fields_too_large")
    _still_serving(fuzzed)


def test_trickled_headers_get_408_and_their_connection_closed(fuzzed: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        received, closed, elapsed = _trickle(sock, b"a", HEADER_TIMEOUT_S + 4)
    assert closed, "the connection stayed open under trickled headers"
    assert elapsed < HEADER_TIMEOUT_S + 2
    _assert_refusal(received, 408, "request_timeout")


def test_blank_lines_trickled_after_a_request_get_408(fuzzed: RunningGateway) -> None:
    """Blank lines before a request line start no request, yet each byte cancels uvicorn's own
    keep-alive timer: they are bounded as a head."""
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        assert _statuses(_exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
        received, closed, elapsed = _trickle(sock, b"\r\n", HEADER_TIMEOUT_S + 4)
    assert closed, "the connection stayed open under trickled blank lines"
    assert elapsed < HEADER_TIMEOUT_S + 2
    _assert_refusal(received, 408, "request_timeout")


def test_a_body_trickled_after_an_early_reply_is_bounded(fuzzed: RunningGateway) -> None:
    """A request refused before its body was read (405 here): uvicorn drops the rest of the body,
    and each byte would cancel its keep-alive timer; the rest has the head's deadline."""
    with socket.create_connection(("127.0.0.1", fuzzed.port)) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        received, closed, elapsed = _trickle(sock, b" ", HEADER_TIMEOUT_S + 4)
    assert closed, "the connection stayed open under a body trickled after its reply"
    assert elapsed < HEADER_TIMEOUT_S + 2
    assert _statuses(received) == [405]


def test_a_body_finished_after_an_early_reply_keeps_the_connection(fuzzed: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        reply = b""
        while not reply.endswith(b"}"):  # the 405 and its envelope
            reply += sock.recv(65536)
        assert _statuses(reply) == [405]
        time.sleep(HEADER_TIMEOUT_S / 2)
        sock.sendall(b"123456789")  # the rest of the body, in time
        time.sleep(HEADER_TIMEOUT_S)  # past the deadline the rest had: it no longer applies
        assert _statuses(_exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]


def test_a_silent_connection_is_closed(fuzzed: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=HEADER_TIMEOUT_S + 4) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b"", "nothing was asked, so nothing is answered"
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 2


def test_a_kept_alive_connection_idles_past_the_header_deadline(fuzzed: RunningGateway) -> None:
    """The wait between requests is uvicorn's keep-alive timeout (5 s), not the header deadline;
    a head sent in pieces within the deadline is served."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", fuzzed.port), timeout=10) as sock:
        for _ in range(3):
            assert _statuses(_exchange(sock, request)) == [200]
            time.sleep(HEADER_TIMEOUT_S * 1.5)
        sock.sendall(request[:10])
        time.sleep(HEADER_TIMEOUT_S / 4)
        assert _statuses(_exchange(sock, request[10:])) == [200]


def test_a_large_body_after_normal_headers_is_served(fuzzed: RunningGateway) -> None:
    """Head and body in one write: only the head counts against ``listen.max_header_bytes``."""
    body = json.dumps({"model": "sim", "input": "x" * 1_000_000}).encode()
    head = (b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + TEAM_A_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    reply = _raw(fuzzed, head + body, timeout=30)
    assert _statuses(reply) == [200], reply[:300]


@pytest.fixture(scope="module")
def unbounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway whose head has neither a deadline nor a size cap."""
    url = f"sqlite:///{tmp_path_factory.mktemp('unbounded') / 'store.db'}"
    with serve(gateway_settings(url, listen={"header_timeout_s": None, "max_header_bytes": None})) as gateway:
        yield gateway


def test_the_head_bounds_can_be_turned_off(unbounded: RunningGateway) -> None:
    reply = _raw(unbounded, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 + OVERSIZED_HEADERS["100 KiB header"] + b"\r\n")
    assert _statuses(reply) == [200], reply[:300]
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", unbounded.port), timeout=10) as sock:
        sock.sendall(request[:10])
        time.sleep(HEADER_TIMEOUT_S * 1.5)
        assert _statuses(_exchange(sock, request[10:])) == [200]


@pytest.mark.parametrize("field", ["header_timeout_s", "max_header_bytes"])
def test_head_bounds_must_be_positive(tmp_path: Path, field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        gateway_settings(f"sqlite:///{tmp_path / 's.db'}", listen={field: 0})
