"""``interlock serve`` with one test-only route, ``GET /_chaos/runtime``: the worker's count of
live asyncio tasks, so chaos and soak runs can tell a task leak in a real server process.

Run as ``python -m tests.chaos.launcher serve --config ...`` (the ``interlock serve`` arguments).
The production application has no such route: it is added here, to the app the real factory
builds, before uvicorn (one worker, same process) imports the factory by name.
"""

from __future__ import annotations

import asyncio
import sys

from litestar import Litestar, get

import proxy.cli

RUNTIME_PATH = "/_chaos/runtime"
_build_app = proxy.cli.app_from_env


@get(RUNTIME_PATH)
async def runtime() -> dict[str, int]:
    return {"tasks": len(asyncio.all_tasks())}


def instrumented_app() -> Litestar:
    app = _build_app()
    app.register(runtime)
    return app


if __name__ == "__main__":
    # uvicorn loads "proxy.cli:app_from_env" by name, from the module already imported here.
    proxy.cli.app_from_env = instrumented_app
    sys.exit(proxy.cli.main())
