#!/usr/bin/env bash
# Set up and run every check: lint, types, and the whole test suite (Redis for real).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$HOME/.local/bin:$PATH"
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    # The tests use a real Redis; start a throwaway one when the machine has none running.
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
uv run ruff check .
uv run mypy
uv run pytest "$@"
