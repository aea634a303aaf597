"""The load harness: ``bash scripts/bench.sh`` (or ``uv run python -m tests.bench``).

Modules, one job each: ``cli`` (options), ``runner`` (what runs in which order), ``targets``
(the systems under test and their request bodies), ``measure`` (one load run with its /proc
readings), ``procs`` (child processes, pinning, /proc readings), ``wrk`` and ``loadgen`` (load
generators), ``streams`` (open-stream capacity), ``profiling`` (py-spy), ``litellm`` (the
optional peer), ``report``, ``plot`` and ``png`` (results), ``passthrough`` (the minimal
Litestar + aiohttp baseline).
"""
