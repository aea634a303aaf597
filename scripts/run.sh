#!/usr/bin/env bash
# Set up and start the gateway on its embedded defaults (SQLite store, built-in simulator).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$HOME/.local/bin:$PATH"
exec uv run interlock serve "$@"
