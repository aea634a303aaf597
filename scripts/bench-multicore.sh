#!/usr/bin/env bash
# The multi-core check of issue 6, for a machine of 4 or more cores (written for 16): worker
# scaling of the gateway and of the pass-through with 1, 2, 4, 8 and 14 workers (those that leave
# two cores free), then the single-worker JSON figures. Pinned: the workers take the first cores;
# the simulator, Redis, the OTLP sink and the load generators the cores left. About 5 minutes on
# 16 cores. Results in bench-results/<timestamp>/ or --out; other options go to scripts/bench.sh
# (e.g. --scale 1,4,8,14, --seconds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
if [ "$cores" -lt 4 ]; then
    echo "needs 4 or more cores, this machine has $cores: run scripts/bench.sh --pin --scale 1,2" >&2
    exit 2
fi
scale=""
for workers in 1 2 4 8 14; do
    if [ "$workers" -le $((cores - 2)) ]; then scale="${scale:+$scale,}$workers"; fi
done
exec bash scripts/bench.sh --pin --sut-cores 0 --aux-cores "$((cores - 2)),$((cores - 1))" --scale "$scale" \
    --profiles none --modes json --fractions 0.5 --no-streams --no-profile --quiet-budget 30 "$@"
