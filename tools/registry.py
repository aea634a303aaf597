"""Server-side tools registered in the gateway's configuration, and their argument checks.

A ``ToolSpec`` decodes from the ``tools:`` list of the gateway YAML; whatever is wrong with one
spec fails the decode with its path (``$.tools[2].target``). ``ToolRegistry`` adds what needs the
whole list (unique names). ``parse_arguments`` turns a model's ``arguments`` string into the
keyword arguments a tool gets, or a ``ToolArgumentsError`` whose message is written for the model.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from msgspec import Meta, Struct

from proxy.schema.items import FunctionName

ToolKind = Literal["python", "command", "http"]

_PYTHON_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Paths the sandbox never exposes: binding them would hand the tool the host's kernel interfaces
# or devices, or the whole filesystem.
_FORBIDDEN_PATHS = ("/", "/proc", "/sys", "/dev")
# Where a command's argv[0] resolves when it is not absolute, inside the sandbox as outside.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64")


class ToolConfigError(ValueError):
    """The tool list is invalid as a whole (e.g. two tools share a name)."""


class ToolArgumentsError(ValueError):
    """A call's arguments are not valid JSON or do not match the tool's schema. The message is
    meant for the model, so it can correct the call."""


class ToolSpec(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One server-side tool, as written in the gateway YAML under ``tools:``."""

    name: FunctionName
    """The function name the model calls (letters, digits, ``_`` and ``-``, at most 64)."""
    description: Annotated[str, Meta(min_length=1)]
    """What the tool does, shown to the model."""
    parameters: dict[str, Any]
    """JSON Schema (draft 2020-12) of the arguments object; the model sees it and every call is
    checked against it before the tool runs. Its ``type`` must be ``object``."""
    kind: ToolKind
    """``python``: call ``target`` (``module:function``) inside the sandbox with the arguments as
    keywords. ``command``: run ``target`` (an argv list) inside the sandbox, arguments as JSON on
    stdin, result on stdout. ``http``: the gateway POSTs the arguments as JSON to ``target`` (a
    URL) itself, without a sandbox; the reply body is the result."""
    target: str | list[str]
    """``module:function`` (python), an argv list (command) or an http(s) URL (http)."""
    timeout_s: Annotated[float, Meta(gt=0, le=600)] = 10.0
    """Wall-clock limit of one call; the sandbox and everything in it is killed after it."""
    max_output_bytes: Annotated[int, Meta(ge=1, le=16 * 1024 * 1024)] = 64 * 1024
    """Larger output is discarded and the call fails (the tool is stopped as soon as it passes)."""
    network: bool = False
    """Give the tool the gateway's network; without it the tool has no usable network interface."""
    memory_mb: Annotated[int, Meta(ge=32)] = 512
    """Address-space limit of each tool process (RLIMIT_AS), in MiB."""
    cpu_seconds: Annotated[int, Meta(ge=1)] = 10
    """CPU time limit of each tool process (RLIMIT_CPU)."""
    max_processes: Annotated[int, Meta(ge=2)] = 32
    """Processes and threads the tool may have at once (RLIMIT_NPROC; the sandbox's init counts)."""
    max_open_files: Annotated[int, Meta(ge=8)] = 64
    """Open file descriptors per tool process (RLIMIT_NOFILE)."""
    tmp_mb: Annotated[int, Meta(ge=1)] = 64
    """Size of the private writable temp dir (``$TMPDIR``, also the working directory and
    ``$HOME``), and the largest file the tool may write (RLIMIT_FSIZE), in MiB."""
    read_only_paths: list[str] = msgspec.field(default_factory=list)
    """More host paths the tool may read (bound read-only at the same place), e.g. a command's
    script directory. The system directories, the Python installation and a python tool's own
    top-level package are always there."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra environment variables for the tool. Not for secrets: the environment is built from
    scratch (PATH, HOME, TMPDIR, LANG and these); the gateway's own never reaches a tool."""

    def __post_init__(self) -> None:
        if self.parameters.get("type") != "object":
            raise ValueError("parameters: a function tool's schema must have type 'object'")
        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as exc:
            raise ValueError(f"parameters: not a valid JSON Schema: {exc.message}") from None
        for path in self.read_only_paths:
            if not os.path.isabs(path) or os.path.normpath(path) in _FORBIDDEN_PATHS:
                raise ValueError(f"read_only_paths: {path!r} must be an absolute path other than / /proc /sys /dev")
            if not os.path.exists(path):
                raise ValueError(f"read_only_paths: {path!r} does not exist")
        for name in self.env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"env: {name!r} is not a valid variable name")
        if self.kind == "python":
            _check_python_target(self.target)
        elif self.kind == "command":
            _check_command_target(self.target, self.read_only_paths)
        else:
            _check_http_target(self.target)


def _check_python_target(target: str | list[str]) -> None:
    if not isinstance(target, str) or not _PYTHON_TARGET.match(target):
        raise ValueError(f"target: a python tool's target is 'package.module:function', got {target!r}")
    top = target.split(".", 1)[0].split(":", 1)[0]
    # find_spec on a top-level name locates it without running any of its code.
    if importlib.util.find_spec(top) is None:
        raise ValueError(f"target: module {top!r} is not importable by the gateway's interpreter")


def _check_command_target(target: str | list[str], read_only_paths: list[str]) -> None:
    if not isinstance(target, list) or not target or not all(target):
        raise ValueError(f"target: a command tool's target is a non-empty argv list, got {target!r}")
    program = target[0]
    if not os.path.isabs(program):
        return  # looked up in PATH inside the sandbox, where only the system directories are
    visible = (*_SYSTEM_DIRS, *read_only_paths)
    if not any(program == path or program.startswith(path.rstrip("/") + "/") for path in visible):
        raise ValueError(f"target: {program} is not visible in the sandbox; add its directory to read_only_paths")


def _check_http_target(target: str | list[str]) -> None:
    url = urlsplit(target) if isinstance(target, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"target: an http tool's target is an http(s) URL, got {target!r}")


class ToolRegistry:
    """The registered tools by name. Built once from the configuration."""

    def __init__(self, specs: Iterable[ToolSpec]) -> None:
        self._tools: dict[str, ToolSpec] = {}
        for index, spec in enumerate(specs):
            if spec.name in self._tools:
                raise ToolConfigError(f"tools[{index}].name: another tool is already named {spec.name!r}")
            self._tools[spec.name] = spec

    def get(self, name: str) -> ToolSpec | None:
        """The tool registered under ``name``, or None when the name is not a server-side tool."""
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


_decode_object = msgspec.json.Decoder(dict[str, Any])


@functools.lru_cache(maxsize=512)
def _validator(schema_json: bytes) -> Draft202012Validator:
    # Keyed by the schema's JSON: specs are unhashable (their schema is a dict), and compiling a
    # validator per call would cost more than checking the arguments.
    return Draft202012Validator(msgspec.json.decode(schema_json))


def parse_arguments(spec: ToolSpec, arguments: str) -> dict[str, Any]:
    """Decode a call's ``arguments`` JSON and check it against the tool's schema.

    Raises ``ToolArgumentsError`` with a message for the model. An empty string counts as ``{}``
    (some models send that for tools without parameters)."""
    try:
        value = _decode_object.decode(arguments.strip() or "{}")
    except msgspec.DecodeError as exc:
        raise ToolArgumentsError(
            f"The arguments for {spec.name} are not a JSON object ({exc}). Call it again with a JSON "
            "object that matches its parameters schema."
        ) from None
    error = best_match(_validator(msgspec.json.encode(spec.parameters)).iter_errors(value))
    if error is not None:
        raise ToolArgumentsError(
            f"The arguments for {spec.name} do not match its parameters schema: at {error.json_path}: "
            f"{error.message}. Call it again with corrected arguments."
        )
    return value
