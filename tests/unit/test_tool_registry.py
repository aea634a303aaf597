"""Tool registration: specs decode from configuration with path-named errors, names are unique,
arguments are checked against each tool's schema; and the builtin tools' own logic."""

from __future__ import annotations

import math
import sys
from typing import Any

import msgspec
import pytest

from tools import ToolArgumentsError, ToolConfigError, ToolRegistry, ToolSpec, parse_arguments
from tools.builtin import calculator, clock

WEATHER = {
    "name": "weather",
    "description": "Forecast for a city.",
    "kind": "command",
    "target": ["/usr/bin/env", "weather-cli"],
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def decode(*entries: dict[str, Any]) -> list[ToolSpec]:
    """As the gateway settings decode the ``tools:`` list."""
    return msgspec.convert(list(entries), list[ToolSpec])


def test_specs_decode_with_defaults_and_register_by_name() -> None:
    registry = ToolRegistry(decode(calculator.SPEC, clock.SPEC, WEATHER))
    assert len(registry) == 3 and "weather" in registry and "nope" not in registry
    weather = registry.get("weather")
    assert weather is not None and weather.target == ["/usr/bin/env", "weather-cli"]
    defaults = (weather.timeout_s, weather.max_output_bytes, weather.network, weather.memory_mb, weather.env)
    assert defaults == (10.0, 65536, False, 512, {})
    assert registry.get("nope") is None
    assert [spec.name for spec in registry] == ["calculator", "clock", "weather"]


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ToolConfigError, match=r"^tools\[2\]\.name: another tool is already named 'clock'$"):
        ToolRegistry(decode(clock.SPEC, calculator.SPEC, clock.SPEC))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "get weather"}, r"Expected `str` matching regex .* - at `\$\[0\]\.name`"),
        ({"colour": "blue"}, r"Object contains unknown field `colour` - at `\$\[0\]`"),
        ({"kind": "shell"}, r"Invalid enum value 'shell' - at `\$\[0\]\.kind`"),
        ({"timeout_s": 0}, r"Expected `float` > 0.0 - at `\$\[0\]\.timeout_s`"),
        ({"parameters": {"type": "array"}}, r"parameters: a function tool's schema must have type 'object'"),
        (
            {"parameters": {"type": "object", "properties": {"city": {"type": "town"}}}},
            r"parameters: not a valid JSON Schema: 'town' is not valid",
        ),
        ({"target": "weather-cli --json"}, r"target: a command tool's target is a non-empty argv list"),
        ({"target": ["/opt/weather/bin/cli"]}, r"target: /opt/weather/bin/cli is not visible in the sandbox"),
        ({"kind": "python", "target": "weather"}, r"target: a python tool's target is 'package.module:function'"),
        ({"kind": "python", "target": "no_such_package.mod:run"}, r"module 'no_such_package' is not importable"),
        ({"kind": "http", "target": "ftp://weather.internal/"}, r"target: an http tool's target is an http\(s\) URL"),
        ({"read_only_paths": ["relative/dir"]}, r"read_only_paths: 'relative/dir' must be an absolute path"),
        ({"read_only_paths": ["/"]}, r"read_only_paths: '/' must be an absolute path other than /"),
        ({"read_only_paths": ["/proc/"]}, r"read_only_paths: '/proc/' must be an absolute path other than"),
        ({"read_only_paths": ["/no/such/dir"]}, r"read_only_paths: '/no/such/dir' does not exist"),
        ({"env": {"API-MODE": "x"}}, r"env: 'API-MODE' is not a valid variable name"),
    ],
)
def test_invalid_specs_name_the_field_and_why(change: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        decode({**WEATHER, **change})


def test_a_command_outside_the_system_dirs_needs_its_directory_listed(tmp_path: Any) -> None:
    script = tmp_path / "forecast.sh"
    script.write_text("#!/bin/sh\ncat\n")
    (spec,) = decode({**WEATHER, "target": [str(script)], "read_only_paths": [str(tmp_path)]})
    assert spec.read_only_paths == [str(tmp_path)]
    (relative,) = decode({**WEATHER, "target": ["weather-cli"]})  # found in PATH inside the sandbox
    assert relative.target == ["weather-cli"]


def test_specs_cannot_change_after_validation() -> None:
    (spec,) = decode(WEATHER)
    with pytest.raises(AttributeError):
        spec.kind = "http"  # type: ignore[misc]


def test_arguments_are_decoded_and_checked_against_the_schema() -> None:
    (spec,) = decode(WEATHER)
    assert parse_arguments(spec, '{"city": "Oslo", "days": 2}') == {"city": "Oslo", "days": 2}
    with pytest.raises(ToolArgumentsError) as schema:
        parse_arguments(spec, '{"city": "Oslo", "days": 9}')
    assert str(schema.value) == (
        "The arguments for weather do not match its parameters schema: at $.days: 9 is greater than the "
        "maximum of 7. Call it again with corrected arguments."
    )
    with pytest.raises(ToolArgumentsError, match=r"at \$: 'city' is a required property"):
        parse_arguments(spec, "{}")
    for garbled in ('{"city": "Oslo"', '["Oslo"]', "Oslo"):
        with pytest.raises(ToolArgumentsError, match=r"^The arguments for weather are not a JSON object \("):
            parse_arguments(spec, garbled)


def test_empty_arguments_count_as_an_empty_object() -> None:
    (spec,) = decode(clock.SPEC)
    assert parse_arguments(spec, "") == parse_arguments(spec, " {} ") == {}


def test_tools_package_loads_its_exports_lazily() -> None:
    import tools

    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = tools.nothing  # type: ignore[attr-defined]
    assert tools.ToolSpec is ToolSpec


def test_builtin_tools_need_nothing_heavy() -> None:
    """A python tool pays its imports on every call: the builtin ones must not pull in the
    gateway's dependencies through the tools package."""
    import subprocess

    code = (
        "import sys, tools.builtin.calculator, tools.builtin.clock;"
        "heavy = {'msgspec', 'aiohttp', 'jsonschema', 'typing'} & set(sys.modules); print(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


# --- the builtin tools' logic (their sandboxed runs are in tests/sandbox) ----------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [("1 + 2 * 3", "7"), ("(1 + 2) * 3", "9"), ("7 // 2 + 7 % 2", "4"), ("2 ** -1", "0.5"), ("-sqrt(16)", "-4.0"),
     ("round(pi, 3)", "3.142"), ("abs(-2.5) + floor(1.9)", "3.5"), ("log(e)", "1.0"), ("1_000 / 8", "125.0")],
)  # fmt: skip
def test_calculator_evaluates_arithmetic(expression: str, value: str) -> None:
    assert calculator.evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('id')", r"^\"__import__\('os'\).system\('id'\)\" is not allowed in an arithmetic"),
        ("x + 1", r"'x' is not allowed"),
        ("'a' * 3", r"\"'a'\" is not allowed"),
        ("True + 1", r"'True' is not allowed"),
        ("sqrt(x=4)", r"'sqrt\(x=4\)' is not allowed"),
        ("(lambda: 1)()", r"is not allowed"),
        ("10 ** 10 ** 10", r"exponents are limited to 10000"),
        ("1 +", r"not an arithmetic expression"),
        ("1" * 1001, r"longer than 1000 characters"),
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calculator.evaluate(expression)


def test_calculator_errors_of_arithmetic_itself_propagate() -> None:
    with pytest.raises(ZeroDivisionError):
        calculator.evaluate("1 / 0")
    assert math.isinf(float(calculator.evaluate("1e308 * 10")))


def test_clock_reports_the_zone_it_was_asked_for() -> None:
    paris = clock.now("Europe/Paris")
    assert paris["timezone"] == "Europe/Paris" and paris["iso"][-6:] in ("+01:00", "+02:00")
    assert clock.now()["iso"].endswith("+00:00")
