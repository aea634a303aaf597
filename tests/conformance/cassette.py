"""Replay recorded provider traffic to aiohttp-based adapters, with vcrpy.

The recordings live in ``shared/fixtures/providers/<dialect>/<file>.yaml`` (see PROVENANCE.md
there). ``shared`` is found beside the repository (``<repo>/../shared``); set
``INTERLOCK_SHARED_DIR`` to point elsewhere.

Both cassette formats found there are normalised on load:

* **vcrpy** files: string bodies are used as they are; ``!!binary`` gzip (or deflate) bodies with
  ``Content-Encoding`` are decompressed and the ``Content-Encoding``/``Content-Length`` headers
  dropped (vcrpy's aiohttp stub hands the raw bytes to the client without decoding them).
* **pydantic-ai** files: ``parsed_body`` (request and response) becomes a JSON body. That JSON was
  re-serialised by pydantic-ai, so compare bodies as parsed JSON, never as bytes.

API
---
``load(name, *, only_host=None, interactions=None) -> Recording``
    Read and normalise a cassette without patching anything. ``name`` is relative to the
    providers folder (``"openai-chat/text-stream.yaml"``) or an absolute path.
    ``interactions`` picks interactions by their position in the file (``[0]``, ``[1, 2]``);
    ``only_host`` (a host name or a collection of them) keeps the interactions sent to that host
    (cassettes that start with a call to another provider). Selecting nothing is an error.

``replay(source, *, only_host=None, interactions=None, require_all_played=True)``
    Context manager that patches aiohttp (``vcr.VCR(record_mode="none")``, an in-memory
    persister, matching on method + host + path only, so query strings and the ``#stream``
    fragments of some SDKs do not matter) and yields a ``Replay``. Each selected interaction
    plays at most once, in file order among those that match (``allow_playback_repeats=False``);
    a request no interaction matches raises vcrpy's ``CannotOverwriteExistingCassetteException``
    from the aiohttp call. Leaving the block normally asserts that every selected interaction was
    played, unless ``require_all_played=False``. ``source`` is a name for ``load`` or a
    ``Recording`` (e.g. from ``synthetic``).

``synthetic(*interactions: Interaction) -> Recording`` and ``Interaction.make(...)``
    Build a recording in code, for behaviour no public cassette shows (mid-stream errors, 5xx).

``Replay`` gives the test:

* ``recording`` / ``interactions``: what was selected (``Interaction`` objects, below);
* ``recorded_requests``: the recorded request bodies, parsed JSON, one per selected interaction;
* ``sent_requests``: ``SentRequest`` (``method``, ``url``, ``headers``, ``body`` bytes,
  ``json()``) for each request the client made, in order: the bodies aiohttp actually sent;
* ``unplayed`` and ``assert_all_played()``.

``Interaction`` holds ``index`` (position in the file), ``method``, ``uri``, ``host``, ``path``,
``request_headers``, ``request_body`` (bytes) and ``request_json()``, ``status``, ``reason``,
``response_headers``, ``response_body`` (decoded bytes), ``response_json()`` and
``response_text()``.

Example::

    with replay("openai-chat/text-stream.yaml") as cassette:
        deltas = [d async for d in provider.run(request)]
    assert cassette.sent_requests[0].json() == cassette.recorded_requests[0]
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import vcr
import yaml
from vcr.request import Request as VcrRequest

__all__ = [
    "Interaction",
    "Recording",
    "Replay",
    "SentRequest",
    "fixtures_dir",
    "load",
    "replay",
    "shared_dir",
    "synthetic",
]

SHARED_DIR_ENV = "INTERLOCK_SHARED_DIR"
_MATCH_ON = ("method", "host", "path")
_DROPPED_WITH_DECODING = {"content-encoding", "content-length"}
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def shared_dir() -> Path:
    """The ``shared`` folder: ``$INTERLOCK_SHARED_DIR`` or ``<repo>/../shared``."""
    override = os.environ.get(SHARED_DIR_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2].parent / "shared"


def fixtures_dir() -> Path:
    """``shared/fixtures/providers``, where the cassettes are."""
    return shared_dir() / "fixtures" / "providers"


@dataclass(frozen=True, slots=True)
class Interaction:
    """One recorded request and its response, bodies normalised to plain bytes."""

    index: int
    method: str
    uri: str
    request_headers: dict[str, list[str]]
    request_body: bytes
    status: int
    reason: str
    response_headers: dict[str, list[str]]
    response_body: bytes

    @property
    def host(self) -> str:
        return urlsplit(self.uri).hostname or ""

    @property
    def path(self) -> str:
        return urlsplit(self.uri).path

    def request_json(self) -> Any:
        return json.loads(self.request_body)

    def response_json(self) -> Any:
        return json.loads(self.response_body)

    def response_text(self) -> str:
        return self.response_body.decode("utf-8")

    @classmethod
    def make(cls, uri: str, *, status: int = 200, body: bytes | str | Any = b"",
             headers: dict[str, str] | None = None, method: str = "POST",
             request_body: bytes | str | Any = b"", index: int = 0) -> Interaction:
        """An interaction built in code; non-bytes/str bodies are JSON-encoded."""
        return cls(index=index, method=method, uri=uri, request_headers={},
                   request_body=_as_bytes(request_body), status=status, reason=_REASONS.get(status, ""),
                   response_headers={k: [v] for k, v in (headers or {}).items()},
                   response_body=_as_bytes(body))


@dataclass(frozen=True, slots=True)
class Recording:
    """Selected interactions of one cassette (or a synthetic one)."""

    name: str
    format: str  # "vcrpy" | "pydantic-ai" | "synthetic"
    interactions: tuple[Interaction, ...]

    @property
    def recorded_requests(self) -> list[Any]:
        return [interaction.request_json() for interaction in self.interactions]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request the client made during replay, as vcrpy saw it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == lowered), None)


@dataclass(slots=True)
class Replay:
    """What a ``replay`` block exposes; see the module docstring."""

    recording: Recording
    sent_requests: list[SentRequest] = field(default_factory=list)
    _cassette: Any = None

    @property
    def interactions(self) -> tuple[Interaction, ...]:
        return self.recording.interactions

    @property
    def recorded_requests(self) -> list[Any]:
        return self.recording.recorded_requests

    @property
    def unplayed(self) -> list[Interaction]:
        counts = self._cassette.play_counts if self._cassette is not None else {}
        return [interaction for position, interaction in enumerate(self.interactions)
                if not counts.get(position)]

    def assert_all_played(self) -> None:
        left = self.unplayed
        if left:
            listed = ", ".join(f"#{i.index} {i.method} {i.uri}" for i in left)
            raise AssertionError(f"{self.recording.name}: interactions not played: {listed}")


def load(name: str | os.PathLike[str], *, only_host: str | Collection[str] | None = None,
         interactions: Sequence[int] | None = None) -> Recording:
    """Read and normalise a cassette; see the module docstring for the selection rules."""
    path = Path(name)
    if not path.is_absolute():
        path = fixtures_dir() / path
    with path.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_Loader)
    raw = data.get("interactions") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: not a cassette (no interactions list)")
    chosen = range(len(raw)) if interactions is None else list(interactions)
    for index in chosen:
        if not 0 <= index < len(raw):
            raise ValueError(f"{path}: no interaction #{index} (it has {len(raw)})")
    parsed = [_interaction(index, raw[index], path) for index in chosen]
    if only_host is not None:
        hosts = {only_host} if isinstance(only_host, str) else set(only_host)
        parsed = [interaction for interaction in parsed if interaction.host in hosts]
    if not parsed:
        raise ValueError(f"{path}: the selection (only_host={only_host!r}, interactions={interactions!r}) "
                         "is empty")
    fmt = "pydantic-ai" if any("parsed_body" in i.get("request", {}) for i in raw) else "vcrpy"
    return Recording(name=str(name), format=fmt, interactions=tuple(parsed))


def synthetic(*interactions: Interaction, name: str = "synthetic") -> Recording:
    if not interactions:
        raise ValueError("a synthetic recording needs at least one interaction")
    return Recording(name=name, format="synthetic", interactions=tuple(interactions))


@contextmanager
def replay(source: str | os.PathLike[str] | Recording, *, only_host: str | Collection[str] | None = None,
           interactions: Sequence[int] | None = None, require_all_played: bool = True) -> Iterator[Replay]:
    """Patch aiohttp to answer from the recording; see the module docstring."""
    if isinstance(source, Recording):
        if only_host is not None or interactions is not None:
            raise TypeError("select interactions when loading, not when replaying a Recording")
        recording = source
    else:
        recording = load(source, only_host=only_host, interactions=interactions)
    state = Replay(recording)
    recorder = vcr.VCR(record_mode="none", match_on=_MATCH_ON)
    with recorder.use_cassette(recording.name, persister=_MemoryPersister(recording),
                               allow_playback_repeats=False) as cassette:
        state._cassette = cassette
        _capture_sent_requests(cassette, state.sent_requests)
        yield state
    if require_all_played:
        state.assert_all_played()


# -- internals ---------------------------------------------------------------------------------
class _MemoryPersister:
    """Hands vcrpy the already normalised interactions; replay never writes a cassette."""

    def __init__(self, recording: Recording) -> None:
        self._recording = recording

    def load_cassette(self, cassette_path: str, serializer: Any) -> tuple[list[VcrRequest], list[dict[str, Any]]]:
        requests, responses = [], []
        for interaction in self._recording.interactions:
            requests.append(VcrRequest(interaction.method, interaction.uri, interaction.request_body,
                                       dict(interaction.request_headers)))
            responses.append({
                "status": {"code": interaction.status, "message": interaction.reason},
                "headers": {name: list(values) for name, values in interaction.response_headers.items()},
                "body": {"string": interaction.response_body},
            })
        return requests, responses

    def save_cassette(self, cassette_path: str, cassette_dict: Any, serializer: Any) -> None:
        raise AssertionError("a replayed cassette is never written")


def _capture_sent_requests(cassette: Any, sink: list[SentRequest]) -> None:
    play_response = cassette.play_response

    def recording_play_response(request: VcrRequest) -> Any:
        response = play_response(request)
        body = request.body
        sink.append(SentRequest(method=request.method, url=request.uri, headers=dict(request.headers.items()),
                                body=body if isinstance(body, bytes) else _as_bytes(body or b"")))
        return response

    cassette.play_response = recording_play_response


def _interaction(index: int, raw: dict[str, Any], path: Path) -> Interaction:
    request, response = raw["request"], raw["response"]
    if "parsed_body" in request:
        request_body = json.dumps(request["parsed_body"]).encode()
    else:
        request_body = _as_bytes(request.get("body") or b"")
    headers = _headers(response.get("headers"))
    if "parsed_body" in response:
        body = json.dumps(response["parsed_body"]).encode()
        headers = {k: v for k, v in headers.items() if k.lower() not in _DROPPED_WITH_DECODING}
    else:
        body = _as_bytes((response.get("body") or {}).get("string") or b"")
        encoding = next((v[0] for k, v in headers.items() if k.lower() == "content-encoding" and v), None)
        if encoding:
            body = _decode(body, encoding.strip().lower(), path, index)
            headers = {k: v for k, v in headers.items() if k.lower() not in _DROPPED_WITH_DECODING}
    status = response.get("status") or {}
    return Interaction(index=index, method=str(request["method"]).upper(), uri=str(request["uri"]),
                       request_headers=_headers(request.get("headers")), request_body=request_body,
                       status=int(status.get("code", 200)), reason=str(status.get("message", "")),
                       response_headers=headers, response_body=body)


def _decode(body: bytes, encoding: str, path: Path, index: int) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "identity":
        return body
    raise ValueError(f"{path} #{index}: cannot decode Content-Encoding {encoding!r}")


def _headers(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])] for k, vs in raw.items()}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode()


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
