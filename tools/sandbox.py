"""Run one tool call: ``run_tool(spec, arguments)`` -> ``ToolResult``.

python and command tools run in a fresh sandbox process per call (see tools/runner_child.py for
the inside, tools/isolation.py for the modes); http tools are POSTed by the gateway itself. A
failure of the tool never raises: it becomes ``ToolResult.error``, phrased for the model.
Cancelling the awaiting task kills the sandbox's whole process group and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Literal, cast

import aiohttp
import msgspec

from tools.isolation import (
    RUNNER_ARGV,
    RUNNER_ENV,
    Isolation,
    build_plan,
    cached_report,
    encode_stdin,
    isolation_report,
    read_status,
)
from tools.netguard import read_capped, refused_by_policy
from tools.registry import ToolArgumentsError, ToolSpec, parse_arguments

log = logging.getLogger("interlock.tools")

_STDERR_TAIL = 4096  # bytes of a tool's stderr kept for the error message and the logs
_EOF_GRACE_S = 0.5  # after the runner exits, how long its pipes may stay open (see _Pipes)
_TERM_GRACE_S = 2.0  # how long the runner gets to tear the sandbox down before SIGKILL
# The sandbox, not the tool, failed: nothing the model can fix; the log says what for the operator.
_GATEWAY_FAULT = "The tool could not be run because of a gateway fault."


class ToolResult(msgspec.Struct, kw_only=True, frozen=True):
    """The outcome of one call."""

    output: str = ""
    """What the tool returned (python), wrote on stdout (command) or answered (http); empty
    when it failed."""
    error: str | None = None
    """Why the call failed, written for the model to read; None on success."""
    exit_code: int | None = None
    """The tool process's exit status (the HTTP status for http tools), when it ended by itself."""
    signal: str | None = None
    """The signal that ended the tool process (e.g. ``SIGXCPU``)."""
    timed_out: bool = False
    """The call passed its ``timeout_s`` or the caller's deadline and was stopped."""
    duration_ms: float = 0.0
    """Wall-clock time of the call, argument checks included."""
    isolation: Isolation | Literal["gateway"] | None = None
    """Where it ran: a sandbox mode, ``gateway`` (http tools), or None (never started)."""

    @property
    def text(self) -> str:
        """What the model should get as the ``function_call_output``."""
        return f"Error: {self.error}" if self.error is not None else self.output

    @property
    def sandbox_failed(self) -> bool:
        """The sandbox itself failed, not the tool: a fault for the operator (counted in metrics)."""
        return self.error == _GATEWAY_FAULT


async def run_tool(
    spec: ToolSpec,
    arguments: str,
    *,
    deadline: float | None = None,
    isolation: Isolation | None = None,
    session: aiohttp.ClientSession | None = None,
) -> ToolResult:
    """Check ``arguments`` (the model's JSON text) against the tool's schema and run the tool.

    ``deadline`` is a ``time.monotonic()`` instant the call must not outlive (the request's);
    the call also stops after ``spec.timeout_s``. ``isolation`` overrides the detected mode
    (``isolation_report()``) for this call. ``session`` is the gateway's session for http tools,
    which checks every address against its fetch policy (``tools.netguard.guarded_session``);
    without one a session with no such check is opened for the call. Never raises for a tool
    failure."""
    started = time.monotonic()
    try:
        values = parse_arguments(spec, arguments)
    except ToolArgumentsError as exc:
        return ToolResult(error=str(exc), duration_ms=_since(started))
    budget = spec.timeout_s if deadline is None else min(spec.timeout_s, deadline - started)
    if budget <= 0:
        return ToolResult(error="The request ran out of time before the tool could start.", duration_ms=_since(started))
    if spec.kind == "http":
        result = await _post(spec, arguments, budget, session)
    else:
        if isolation is None:
            report = cached_report()
            if report is None:
                report = await asyncio.to_thread(isolation_report)  # the probe blocks: not on the loop
            isolation = report.mode
        result = await _sandboxed(spec, values, arguments, isolation, budget)
    result = msgspec.structs.replace(result, duration_ms=_since(started))
    log.debug("tool %s (%s): %.1f ms, error=%s", spec.name, result.isolation, result.duration_ms, result.error)
    return result


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


class _Pipes(asyncio.SubprocessProtocol):
    """Collects the runner's stdout (up to the tool's limit) and the tail of its stderr.

    ``done`` resolves once the runner has exited and its pipes are closed, or at once when the
    output passes the limit. A pipe still open ``_EOF_GRACE_S`` after the exit belongs to a
    process that escaped the runner (rlimits mode only); the caller kills the process group."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._open = {1, 2}
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow = False
        self.exited: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr += data
            del self.stderr[:-_STDERR_TAIL]
        elif not self.overflow:
            if len(self.stdout) + len(data) > self._limit:
                self.overflow = True
                self.stdout.clear()  # nothing of an oversize output is kept
                self._settle()
            else:
                self.stdout += data

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and self.exited.done():
            self._settle()

    def process_exited(self) -> None:
        self.exited.set_result(None)
        if self._open:
            self._loop.call_later(_EOF_GRACE_S, self._settle)
        else:
            self._settle()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the runner leads its own session (start_new_session)


async def _sandboxed(
    spec: ToolSpec, values: dict[str, Any], arguments: str, mode: Isolation, budget: float
) -> ToolResult:
    loop = asyncio.get_running_loop()
    # rlimits mode has no private mount: the tool gets a fresh directory as cwd/HOME/TMPDIR.
    tmp = "/tmp" if mode == "namespaces" else await asyncio.to_thread(tempfile.mkdtemp, prefix="interlock-tool-")
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    plan = build_plan(spec, values if spec.kind == "python" else {}, mode, status_fd=status_w, tmp=tmp)
    pipes = _Pipes(loop, spec.max_output_bytes)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: pipes, *RUNNER_ARGV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=RUNNER_ENV, start_new_session=True, pass_fds=(status_w,),
        )  # fmt: skip
    except BaseException as exc:
        os.close(status_r)
        _remove_later(loop, tmp, mode)
        if not isinstance(exc, OSError):
            raise
        log.error("tool %s: the sandbox runner could not be started: %s", spec.name, exc)
        return ToolResult(error=_GATEWAY_FAULT, isolation=mode)
    finally:
        os.close(status_w)
    pid = transport.get_pid()
    try:
        # uvloop's pipe transports are not asyncio.WriteTransport subclasses: check the duck.
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        if stdin is None:
            raise RuntimeError("the sandbox runner has no stdin pipe")
        # A command reads its JSON arguments on stdin, after the plan; the transport writes as the
        # pipe drains, so a tool that never reads cannot block the gateway.
        stdin.write(encode_stdin(plan, arguments.encode() if spec.kind == "command" else b""))
        stdin.close()
        timed_out = False
        try:
            async with asyncio.timeout(budget):
                await pipes.done
        except TimeoutError:
            timed_out = True
        if timed_out or pipes.overflow:
            await _terminate(transport, pipes)
    except BaseException:  # cancelled: no time to tear down gracefully, kill the lot
        _kill_group(pid)
        transport.close()
        os.close(status_r)
        _remove_later(loop, tmp, mode)
        raise
    if mode == "rlimits":
        # What outlived the runner in its group: the runner sweeps on its own unless the tool
        # killed it. (In namespaces mode nothing can: the namespace died with its init.)
        _kill_group(pid)
    transport.close()
    status = read_status(status_r)
    if mode == "rlimits":
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    return _outcome(spec, mode, budget, status, pipes, timed_out)


async def _terminate(transport: asyncio.SubprocessTransport, pipes: _Pipes) -> None:
    """SIGTERM asks the runner to kill the tool and all it started and to wait for them, so
    nothing is left when it exits; SIGKILL of the group if it does not within the grace."""
    with contextlib.suppress(ProcessLookupError):
        transport.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(_TERM_GRACE_S):
            await pipes.exited
    except TimeoutError:
        _kill_group(transport.get_pid())
        await pipes.exited


def _remove_later(loop: asyncio.AbstractEventLoop, tmp: str, mode: Isolation) -> None:
    if mode == "rlimits":
        loop.run_in_executor(None, shutil.rmtree, tmp, True)


_SIGNAL_ERRORS = {
    signal.SIGXCPU: "The tool used more than its CPU time limit ({cpu} s) and was stopped.",
    signal.SIGKILL: "The tool was killed (SIGKILL); it may have passed its CPU time limit ({cpu} s).",
    signal.SIGXFSZ: "The tool tried to write a file larger than {tmp} MiB and was stopped.",
    signal.SIGSEGV: "The tool crashed (SIGSEGV); it may have run out of memory ({memory} MiB).",
}


def _outcome(spec: ToolSpec, mode: Isolation, budget: float, status: str, pipes: _Pipes, timed_out: bool) -> ToolResult:
    """Turn how the sandbox ended into a result for the model."""
    stderr = pipes.stderr.decode("utf-8", "replace").strip()
    if stderr:
        log.debug("tool %s stderr: %s", spec.name, stderr)
    if timed_out:
        error = f"The tool did not finish within {budget:.3g} s and was stopped."
        return ToolResult(error=error, timed_out=True, isolation=mode)
    if pipes.overflow:
        error = f"The tool's output passed the limit of {spec.max_output_bytes} bytes and was discarded."
        return ToolResult(error=error, isolation=mode)
    word, _, detail = status.partition(" ")
    if word == "signal":
        number = signal.Signals(int(detail))
        template = _SIGNAL_ERRORS.get(number, f"The tool was stopped by {number.name}.")
        error = template.format(cpu=spec.cpu_seconds, tmp=spec.tmp_mb, memory=spec.memory_mb)
        return ToolResult(error=error, signal=number.name, isolation=mode)
    if word != "exit":
        log.error("tool %s: the sandbox failed (%s): %s", spec.name, status or "no status", stderr[-500:])
        return ToolResult(error=_GATEWAY_FAULT, isolation=mode)
    code = int(detail)
    output = pipes.stdout.decode("utf-8", "replace")
    if spec.kind == "python":
        reply, text = output[:1], output[1:]
        if reply == "o":
            return ToolResult(output=text, exit_code=code, isolation=mode)
        if reply == "e":
            return ToolResult(error=f"The tool raised {text}", exit_code=code, isolation=mode)
    elif code == 0:
        return ToolResult(output=output, exit_code=code, isolation=mode)
    said = stderr or output.strip()  # many commands explain a failure on stdout
    error = f"The tool exited with status {code}" + (f": {said[-1000:]}" if said else ".")
    return ToolResult(error=error, exit_code=code, isolation=mode)


async def _post(spec: ToolSpec, arguments: str, budget: float, session: aiohttp.ClientSession | None) -> ToolResult:
    """An http tool: POST the arguments to its configured URL and nowhere else (no redirects,
    no proxies from the environment)."""
    assert isinstance(spec.target, str)
    own = session is None
    client = aiohttp.ClientSession(trust_env=False) if session is None else session
    try:
        async with client.post(
            spec.target, data=arguments.encode() or b"{}", headers={"Content-Type": "application/json"},
            allow_redirects=False, timeout=aiohttp.ClientTimeout(total=budget),
        ) as reply:  # fmt: skip
            body = await read_capped(reply, spec.max_output_bytes)
            if body is None:
                error = f"The tool's reply passed the limit of {spec.max_output_bytes} bytes and was discarded."
                return ToolResult(error=error, exit_code=reply.status, isolation="gateway")
            text = body.decode("utf-8", "replace")
            if reply.status >= 300:
                error = f"The tool's service answered HTTP {reply.status}: {text[:500]}"
                return ToolResult(error=error, exit_code=reply.status, isolation="gateway")
            return ToolResult(output=text, exit_code=reply.status, isolation="gateway")
    except TimeoutError:
        error = f"The tool's service did not answer within {budget:.3g} s."
        return ToolResult(error=error, timed_out=True, isolation="gateway")
    except aiohttp.ClientError as exc:
        log.warning("http tool %s: %s: %s", spec.name, type(exc).__name__, exc)
        if refused_by_policy(exc):
            error = "The tool's service is at an address the gateway's fetch policy does not allow."
            return ToolResult(error=error, isolation="gateway")
        return ToolResult(error=f"The tool's service could not be reached ({type(exc).__name__}).", isolation="gateway")
    finally:
        if own:
            await client.close()
