"""LiteLLM's proxy as an optional peer (``--with-litellm``): installed by the harness into a
throwaway venv under /tmp, pointed at the simulator's Chat Completions path, measured on its own
``/v1/chat/completions``.

The version range stops before the LiteLLM releases that were published compromised; override it
with ``--litellm-spec`` only for a release you trust. The proxy is started with its outbound HTTP
sent to a closed loopback port (``HTTP(S)_PROXY``), so nothing it tries leaves the machine; the
simulator is reached directly (``NO_PROXY``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.bench.procs import Proc, Processes, free_port, wait_http

VENV = Path("/tmp/interlock-bench-litellm")
DEFAULT_SPEC = "litellm[proxy]>=1.74,<1.82"
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class Unavailable(Exception):
    """LiteLLM could not be installed or started; the message says why."""


def install(procs: Processes, spec: str = DEFAULT_SPEC, *, timeout: float = 900.0) -> Path:
    """The ``litellm`` command of the throwaway venv, installing it there when missing."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    uv = shutil.which("uv")
    if uv is None:
        raise Unavailable("uv is not on PATH, so LiteLLM cannot be installed into a throwaway venv")
    status, _ = procs.run("litellm-venv", [uv, "venv", "--quiet", "--python", "3.11", str(VENV)], timeout=300)
    if status != 0:
        raise Unavailable(f"creating {VENV} failed; see logs/litellm-venv.log")
    status, _ = procs.run("litellm-install", [uv, "pip", "install", "--quiet", "--python", str(VENV / "bin" / "python"),
                                              spec], timeout=timeout)
    if status != 0 or not exe.exists():
        shutil.rmtree(VENV, ignore_errors=True)
        raise Unavailable(f"installing {spec!r} failed or timed out; see logs/litellm-install.log")
    return exe


def start(procs: Processes, exe: Path, *, work: Path, upstream: str, cores: str | None) -> tuple[Proc, str]:
    """LiteLLM's proxy, one worker, serving model ``sim-chat`` from the simulator at ``upstream``."""
    config = {
        "model_list": [{"model_name": "sim-chat", "litellm_params": {
            "model": "openai/sim-1", "api_base": upstream + "/v1", "api_key": "sk-simulator"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = work / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    proc = procs.start("litellm", argv, cores=cores, env=_OFFLINE_ENV, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, base + "/health/liveliness", timeout=180)
    except RuntimeError as exc:
        procs.stop(proc)
        raise Unavailable(f"LiteLLM's proxy did not start: {exc}") from None
    return proc, base
