#!/usr/bin/env bash
# Run the load harness: simulator, baselines, gateway and load generators on loopback, results in
# bench-results/<timestamp>/. Options: bash scripts/bench.sh --help (e.g. --quick, --pin,
# --with-litellm). Every process it starts is stopped when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"

want_wrk=1
prev=""
for arg in "$@"; do
    case "$prev $arg" in
        "--loadgen python" | *" --loadgen=python" | *" --help" | *" -h") want_wrk=0 ;;
    esac
    prev="$arg"
done
if [ "$want_wrk" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
    # wrk measures saturation; without it the harness falls back to its own closed-loop generator.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[bench] installing wrk from Debian"
        timeout 300 apt-get install -y -qq wrk >/dev/null 2>&1 \
            || { timeout 300 apt-get update -qq >/dev/null 2>&1 && timeout 300 apt-get install -y -qq wrk >/dev/null 2>&1; } \
            || echo "[bench] wrk could not be installed; using the Python generator"
    else
        echo "[bench] wrk not found; using the Python generator (apt-get install wrk for better saturation figures)"
    fi
fi

# BENCH_PYTHON: an interpreter that already has the project's dependencies (a machine without uv
# or network, given wheels); otherwise the project's environment, set up by bootstrap.sh.
if [ -z "${BENCH_PYTHON:-}" ]; then
    bash scripts/bootstrap.sh
fi

# Many open streams need many descriptors (client, gateway and simulator sides).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

work_dir="$(mktemp -d -t interlock-bench.XXXXXX)"
pid_file="$work_dir/children.pids"
export BENCH_WORK_DIR="$work_dir" BENCH_PID_FILE="$pid_file"
runner=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$runner" 2>/dev/null || true
    fi
    # Process groups the harness started and did not get to stop (it was killed outright).
    if [ -s "$pid_file" ]; then
        while read -r group; do
            if [ -n "$group" ]; then kill -KILL -- "-$group" 2>/dev/null || true; fi
        done <"$pid_file"
    fi
    rm -rf "$work_dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

if [ -n "${BENCH_PYTHON:-}" ]; then
    "$BENCH_PYTHON" -m tests.bench "$@" &
else
    uv run --frozen python -m tests.bench "$@" &
fi
runner=$!
wait "$runner"
