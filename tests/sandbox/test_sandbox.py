"""The tool sandbox with real processes: every kind runs, failures come back as errors for the
model, and escape attempts are contained while this process (standing in for the gateway) keeps
working.

Each test runs in the mode detected here (``namespaces`` where the kernel allows) and forced into
``rlimits`` mode. Where rlimits mode cannot contain an attack, the test asserts the documented
behaviour instead: the attack's effect and the line of ``isolation_report().not_contained`` that
admits it. Attacks that would harm this machine in rlimits mode (signalling this process, ``kill
-9 -1``, a fork bomb running as root, writing to /usr) are not run there; the test asserts the
admitting line. So nothing passes silently on a machine without namespaces.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from tools import Isolation, ToolResult, ToolSpec, isolation_report, run_tool
from tools.builtin import calculator, clock
from tools.isolation import NOT_CONTAINED

CALCULATOR = msgspec.convert(calculator.SPEC, ToolSpec)


@pytest.fixture(params=["detected", "rlimits"])
def mode(request: pytest.FixtureRequest) -> Isolation:
    """The mode this machine gives tools, then the fallback forced."""
    return isolation_report().mode if request.param == "detected" else "rlimits"


def payload(function: str, **overrides: Any) -> ToolSpec:
    """A python tool running one of the functions of tests/sandbox/__init__.py."""
    fields: dict[str, Any] = {"description": "test payload", "parameters": {"type": "object"}, "kind": "python"}
    return ToolSpec(name=function, target=f"tests.sandbox:{function}", **{**fields, **overrides})


def command(*argv: str, **overrides: Any) -> ToolSpec:
    fields: dict[str, Any] = {"description": "test command", "parameters": {"type": "object"}}
    return ToolSpec(name="command", kind="command", target=list(argv), **{**fields, **overrides})


async def call(spec: ToolSpec, mode: Isolation, **arguments: Any) -> ToolResult:
    return await run_tool(spec, json.dumps(arguments), isolation=mode)


def admits(area: str) -> bool:
    """Whether rlimits mode's report (``not_contained``) admits that ``area`` is not contained."""
    return any(line.startswith(area + ":") for line in NOT_CONTAINED["rlimits"])


async def still_working(mode: Isolation) -> None:
    """This process is alive (we are running) and the sandbox still serves calls."""
    result = await call(CALCULATOR, mode, expression="2 + 2")
    assert (result.output, result.error) == ("4", None)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def new_marker() -> str:
    """A unique ``sleep`` argument, to find a payload's daemon from outside the sandbox."""
    return str(random.randrange(10**8, 10**9))


def processes_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                argv = file.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as file:
                zombie = file.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()] and not zombie:
            found.append(int(entry))
    return found


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


# --- isolation detection ------------------------------------------------------------------


def test_detected_mode_matches_what_the_kernel_allows() -> None:
    """An oracle independent of the runner: may a process here make user, mount, PID and network
    namespaces? If so the sandbox must use them, never fall back silently."""
    oracle = "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x10000000 | 0x20000 | 0x20000000 | 0x40000000))"
    kernel_allows = subprocess.run([sys.executable, "-c", oracle], check=False).returncode == 0
    report = isolation_report()
    assert report.mode == ("namespaces" if kernel_allows else "rlimits"), report.reason
    assert report.contained and report.not_contained and report.reason


# --- each kind runs -------------------------------------------------------------------------


async def test_python_tool_runs_inside_with_its_arguments(mode: Isolation) -> None:
    result = await call(CALCULATOR, mode, expression="(2 + 3) * sqrt(16)")
    assert result == msgspec.structs.replace(result, output="20.0", error=None, exit_code=0, isolation=mode)
    echoed = await call(payload("echo"), mode, word="hi", n=[1, 2])
    reply = json.loads(echoed.output)
    assert reply["arguments"] == {"word": "hi", "n": [1, 2]}
    assert reply["cwd"] == reply["tmpdir"]  # the private temp dir is the working directory
    if mode == "namespaces":
        assert reply["cwd"] == "/tmp"


async def test_clock_tool_knows_time_zones(mode: Isolation) -> None:
    spec = msgspec.convert(clock.SPEC, ToolSpec)
    reply = json.loads((await call(spec, mode, timezone="Asia/Tokyo")).output)
    assert reply["iso"].endswith("+09:00") and abs(reply["unix"] - time.time()) < 60
    unknown = await call(spec, mode, timezone="Mars/Olympus_Mons")
    assert unknown.error is not None and "ZoneInfoNotFoundError" in unknown.error


async def test_command_tool_gets_json_on_stdin_and_answers_on_stdout(mode: Isolation) -> None:
    result = await run_tool(command("/bin/cat"), '{"city": "Lyon", "days": 3}', isolation=mode)
    assert (result.output, result.error, result.exit_code) == ('{"city": "Lyon", "days": 3}', None, 0)


async def test_command_from_read_only_paths_through_a_symlink(mode: Isolation, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # pytest makes it owner-only; the sandbox's user is not the owner
    release = tmp_path / "releases" / "42"
    release.mkdir(parents=True)
    (release / "run.sh").write_text('#!/bin/sh\necho "release 42 got $(cat)"\n')
    (release / "run.sh").chmod(0o755)
    (tmp_path / "current").symlink_to(release)
    # Listed both alone and inside a listed directory: the link is shown either way.
    for paths in ([tmp_path / "current"], [tmp_path, tmp_path / "current"]):
        spec = command(str(tmp_path / "current" / "run.sh"), read_only_paths=[str(path) for path in paths])
        result = await run_tool(spec, '{"n": 1}', isolation=mode)
        assert (result.output, result.error) == ('release 42 got {"n": 1}\n', None)


async def test_command_failures_are_reported(mode: Isolation) -> None:
    failed = await call(command("/bin/sh", "-c", "echo 'no such city' >&2; exit 3"), mode)
    assert failed.error == "The tool exited with status 3: no such city"
    assert (failed.exit_code, failed.output) == (3, "")
    missing = await call(command("no-such-program"), mode)
    assert missing.exit_code == 127 and missing.error is not None and "cannot run 'no-such-program'" in missing.error


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """An internal HTTP service on 127.0.0.1, recording what it was sent."""
    seen: list[tuple[str, str, bytes]] = []

    async def record(request: web.Request) -> None:
        seen.append((request.path, request.content_type, await request.read()))

    async def echo(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="echo " + seen[-1][2].decode())

    async def broken(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="database down")

    async def moved(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/echo")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1_000_000)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text="late")

    app = web.Application()
    for path, handler in (("/echo", echo), ("/broken", broken), ("/moved", moved), ("/huge", huge), ("/slow", slow)):
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", seen
    await runner.cleanup()


def http_tool(url: str, **overrides: Any) -> ToolSpec:
    fields: dict[str, Any] = {"description": "internal service", "parameters": {"type": "object"}}
    return ToolSpec(name="service", kind="http", target=url, **{**fields, **overrides})


async def test_http_tool_posts_the_arguments_to_its_url(service: tuple[str, list[Any]]) -> None:
    base, seen = service
    async with aiohttp.ClientSession() as session:
        result = await run_tool(http_tool(base + "/echo"), '{"q": "status"}', session=session)
    assert (result.output, result.error, result.exit_code, result.isolation) == (
        'echo {"q": "status"}', None, 200, "gateway",
    )  # fmt: skip
    assert seen == [("/echo", "application/json", b'{"q": "status"}')]


async def test_http_tool_failures_are_reported(service: tuple[str, list[Any]]) -> None:
    base, seen = service
    broken = await run_tool(http_tool(base + "/broken"), "{}")  # no session: one is opened for the call
    assert broken.error == "The tool's service answered HTTP 500: database down"
    moved = await run_tool(http_tool(base + "/moved"), "{}")
    assert moved.exit_code == 302 and moved.error is not None
    assert [path for path, _, _ in seen] == ["/broken", "/moved"]  # the redirect was not followed
    huge = await run_tool(http_tool(base + "/huge", max_output_bytes=1000), "{}")
    assert (huge.output, huge.error) == ("", "The tool's reply passed the limit of 1000 bytes and was discarded.")
    slow = await run_tool(http_tool(base + "/slow", timeout_s=0.3), "{}")
    assert slow.timed_out and slow.error == "The tool's service did not answer within 0.3 s."
    closed = await run_tool(http_tool(base.rsplit(":", 1)[0] + ":1/x"), "{}")
    assert closed.error == "The tool's service could not be reached (ClientConnectorError)."


async def test_parallel_calls_are_independent(mode: Isolation) -> None:
    echoes = [call(payload("echo"), mode, n=n) for n in range(6)]
    replies = [json.loads(result.output) for result in await asyncio.gather(*echoes)]
    assert [reply["arguments"] for reply in replies] == [{"n": n} for n in range(6)]
    wrote = await call(payload("write_file"), mode, path="left-behind.txt")
    found = await call(payload("read_file"), mode, path="left-behind.txt")
    assert wrote.output == "written"
    assert found.error is not None and "FileNotFoundError" in found.error  # each call has its own temp dir


# --- failures become errors for the model ---------------------------------------------------


async def test_arguments_that_break_the_schema_never_start_the_tool(mode: Isolation) -> None:
    wrong = await call(CALCULATOR, mode, expression=42)
    assert wrong.isolation is None and wrong.exit_code is None
    assert wrong.error == (
        "The arguments for calculator do not match its parameters schema: at $.expression: 42 is not of "
        "type 'string'. Call it again with corrected arguments."
    )
    garbled = await run_tool(CALCULATOR, '{"expression": ', isolation=mode)
    assert garbled.isolation is None and garbled.error is not None and "not a JSON object" in garbled.error


async def test_an_exception_in_the_tool_is_reported(mode: Isolation) -> None:
    result = await call(payload("fail"), mode, message="the ledger is locked")
    assert (result.output, result.error) == ("", "The tool raised RuntimeError: the ledger is locked")
    refused = await call(CALCULATOR, mode, expression="__import__('os').system('id')")
    assert refused.error is not None and refused.error.startswith("The tool raised ValueError:")


async def test_timeout_kills_the_tool_and_what_it_started(mode: Isolation) -> None:
    marker = new_marker()
    started = time.monotonic()
    task = asyncio.create_task(call(payload("daemon", timeout_s=1), mode, marker=marker, then_sleep=60))
    assert await eventually(lambda: bool(processes_running(marker)))
    result = await task
    assert result.timed_out and result.error == "The tool did not finish within 1 s and was stopped."
    assert time.monotonic() - started < 4
    assert processes_running(marker) == []  # gone when run_tool returns, not some time later
    await still_working(mode)


async def test_deadline_bounds_the_call() -> None:
    spec = payload("daemon", timeout_s=30)
    late = await run_tool(spec, '{"marker": "1", "then_sleep": 0}', deadline=time.monotonic() - 1)
    assert late.isolation is None and late.error == "The request ran out of time before the tool could start."
    marker = new_marker()
    arguments = json.dumps({"marker": marker, "then_sleep": 60})
    result = await run_tool(spec, arguments, deadline=time.monotonic() + 0.8)
    assert result.timed_out and result.duration_ms < 3000
    assert processes_running(marker) == []


async def test_oversize_output_is_refused_without_filling_the_gateway(mode: Isolation) -> None:
    before = rss_kib()
    limit = "The tool's output passed the limit of 65536 bytes and was discarded."
    made = await call(payload("big_output", memory_mb=1024), mode, size=100_000_000)
    assert (made.output, made.error) == ("", limit)
    printed = await call(command("/bin/sh", "-c", "head -c 100000000 /dev/zero"), mode)
    assert (printed.output, printed.error) == ("", limit)
    assert rss_kib() - before < 32 * 1024  # the 100 MB never came into this process
    await still_working(mode)


async def test_a_broken_sandbox_is_a_gateway_fault(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The model is told the call failed for a reason it cannot fix; the log tells the operator."""
    fault = "The tool could not be run because of a gateway fault."
    with monkeypatch.context() as patch:
        patch.setattr("tools.isolation._stage_dir", lambda: str(tmp_path / "gone"))  # nowhere to mount the root
        broken = await call(command("/bin/true"), "namespaces")
    assert (broken.error, broken.exit_code) == (fault, None)
    assert "the sandbox failed (error " in caplog.text
    monkeypatch.setattr("tools.sandbox.RUNNER_ARGV", ("/no/such/python",))
    unstartable = await call(CALCULATOR, "rlimits", expression="1")
    assert unstartable.error == fault and "the sandbox runner could not be started" in caplog.text


# --- escape attempts ---------------------------------------------------------------------------


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server of this process on 127.0.0.1 (standing in for the gateway's port and Redis)."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()
    await server.wait_closed()


async def test_no_usable_network(mode: Isolation, listener: tuple[int, list[bytes]]) -> None:
    port, received = listener
    interfaces = json.loads((await call(payload("interfaces"), mode)).output)
    attempt = await call(payload("connect"), mode, port=port)
    if mode == "namespaces":
        assert interfaces in ([], [["lo", False]])
        assert attempt.error is not None and "Network is unreachable" in attempt.error
        await asyncio.sleep(0.1)
        assert received == []
    else:
        assert attempt.output == "connected" and await eventually(lambda: received == [b"escaped\n"])
        assert admits("network")
    received.clear()
    declared = await call(payload("connect", network=True), mode, port=port)  # network: true opts in
    assert declared.output == "connected" and await eventually(lambda: received == [b"escaped\n"])
    await still_working(mode)


async def test_gateway_secrets_are_out_of_reach(
    mode: Isolation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INTERLOCK_TEST_SECRET", "hunter2")
    from_env = await call(payload("read_env"), mode, name="INTERLOCK_TEST_SECRET")
    assert from_env.error == "The tool raised KeyError: 'INTERLOCK_TEST_SECRET'"  # every mode
    config = tmp_path / "gateway.yaml"
    config.write_text("seal_key: hunter2\n")
    config.chmod(0o600)
    from_file = await call(payload("read_file"), mode, path=str(config))
    from_proc = await call(payload("read_file"), mode, path=f"/proc/{os.getpid()}/environ")
    if mode == "namespaces":
        assert from_file.error is not None and "FileNotFoundError" in from_file.error
        assert from_proc.error is not None and "FileNotFoundError" in from_proc.error
    else:
        assert "hunter2" in from_file.output and admits("files")
        # This process's environment as it started (later setenv calls do not show there).
        assert "PATH=" in from_proc.output and admits("signals and ptrace")


async def test_nothing_outside_the_temp_dir_is_writable(mode: Isolation, tmp_path: Path) -> None:
    inside = await call(payload("write_file"), mode, path="note.txt")
    assert inside.output == "written"
    escaped = tmp_path / "escaped.txt"
    outside = await call(payload("write_file"), mode, path=str(escaped))
    if mode == "namespaces":
        assert outside.error is not None and "FileNotFoundError" in outside.error and not escaped.exists()
        for path in ("/usr/escaped.txt", "/escaped.txt", "/etc/escaped.txt"):
            system = await call(payload("write_file"), mode, path=path)
            assert system.error is not None and "Read-only file system" in system.error, path
            assert not os.path.exists(path)
    else:
        assert outside.output == "written" and escaped.read_text() == "escaped" and admits("files")


async def test_no_privilege_to_regain(mode: Isolation) -> None:
    if mode == "rlimits":
        assert admits("privileges")  # the gateway's own: as root, all of these would work
        return
    reply = json.loads((await call(payload("escalate"), mode)).output)
    assert reply["worked"] == [] and int(reply["capabilities"], 16) == 0
    assert reply["outside_uid"] == (65534 if os.geteuid() == 0 else os.geteuid())  # never real root


async def test_fork_bomb_is_contained(mode: Isolation) -> None:
    if mode == "rlimits" and os.geteuid() == 0:
        assert admits("process count")  # root is exempt from RLIMIT_NPROC: not run here
        return
    result = await call(payload("fork_bomb", max_processes=16), mode)
    assert result.error is not None and "BlockingIOError" in result.error
    await still_working(mode)


async def test_memory_bomb_is_contained(mode: Isolation) -> None:
    before = rss_kib()
    result = await call(payload("memory_bomb", memory_mb=256), mode)
    assert result.error is not None and result.error.startswith("The tool raised MemoryError")
    assert rss_kib() - before < 32 * 1024
    await still_working(mode)


async def test_cpu_spin_is_stopped_by_the_cpu_limit(mode: Isolation) -> None:
    result = await call(payload("spin", cpu_seconds=1, timeout_s=30), mode)
    assert result.signal == "SIGXCPU" and not result.timed_out
    assert result.error == "The tool used more than its CPU time limit (1 s) and was stopped."
    await still_working(mode)


async def test_killing_the_parent_is_contained(mode: Isolation) -> None:
    result = await call(payload("kill_parent"), mode)
    if mode == "namespaces":
        assert result.output == "parent 1 did not die"  # its parent is the sandbox's init
        gateway = await call(payload("kill_pid"), mode, pid=os.getpid())
        assert gateway.error is not None and "ProcessLookupError" in gateway.error
    else:
        assert result.error is not None  # it killed its runner, which ended the call
        assert admits("signals and ptrace")  # so it could kill this process too: not run
    await still_working(mode)


async def test_kill_everything_is_contained(mode: Isolation) -> None:
    if mode == "rlimits":
        assert admits("signals and ptrace")  # kill -9 -1 would take this machine's processes
        return
    result = await call(command("/bin/sh", "-c", "kill -9 -1; echo survived"), mode)
    assert result.output == "survived\n"  # it killed only what is in its own PID namespace
    await still_working(mode)


async def test_background_child_is_gone_after_return(mode: Isolation) -> None:
    marker = new_marker()
    task = asyncio.create_task(call(payload("daemon"), mode, marker=marker, then_sleep=0.5))
    assert await eventually(lambda: bool(processes_running(marker)))  # it really ran, outside view
    result = await task
    assert result.output == "daemon started"
    assert processes_running(marker) == []


async def test_cancellation_kills_the_sandbox_and_reraises(mode: Isolation) -> None:
    marker = new_marker()
    task = asyncio.create_task(call(payload("daemon", timeout_s=60), mode, marker=marker, then_sleep=60))
    assert await eventually(lambda: bool(processes_running(marker)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if mode == "namespaces":
        assert await eventually(lambda: processes_running(marker) == [], within=2)
    else:
        # The process group dies at once; a daemon that left it survives a cancelled call.
        assert processes_running(marker) and admits("cleanup on cancellation")
        for pid in processes_running(marker):
            os.kill(pid, signal.SIGKILL)
    await still_working(mode)
