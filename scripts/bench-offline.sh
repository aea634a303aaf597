#!/usr/bin/env bash
# The multi-core check on a machine that cannot reach a package index (a lent benchmark box).
#   bash scripts/bench-offline.sh pack [PYTHON_VERSION]   here, with network: the locked runtime
#       dependencies as wheels for that Python (default 3.12) and Debian's wrk and redis-server
#       with their libraries, into .bench-offline/ (about 41 MB)
#   bash scripts/bench-offline.sh run [ARGS]   there, with .bench-offline/ copied beside the code:
#       unpacks both under /tmp and runs scripts/bench-multicore.sh ARGS with that environment
# Env for run: BENCH_OFFLINE_PYTHON (default python3, of the version packed), BENCH_LIMIT (seconds,
# default 430), OUT (where results.md, results.json and the log are copied; default /tmp/bench-offline-out).
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=.bench-offline
debs="wrk redis-server redis-tools libjemalloc2 liblzf1 libluajit2-5.1-2 libluajit2-5.1-common"

pack() {
    local version="${1:-3.12}" platforms=()
    for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${tag}_x86_64")
    done
    export PATH="$HOME/.local/bin:$PATH"
    rm -rf "$bundle" && mkdir -p "$bundle/whl" "$bundle/deb" || return 1
    # Markers are for the packing machine; the target is Linux CPython, so drop them and the
    # packages only Windows or old Pythons need.
    uv export --frozen --no-dev --no-hashes --no-emit-project | grep -v '^ *#' | sed 's/ ;.*//' \
        | grep -v -E '^(async-timeout|colorama|tzdata)==' >"$bundle/requirements.txt" || return 1
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        "${platforms[@]}" -d "$bundle/whl" -r "$bundle/requirements.txt" || return 1
    # shellcheck disable=SC2086  # a list of package names
    (cd "$bundle/deb" && apt-get download $debs) || return 1
    du -sh "$bundle"
}

run() {
    local py="${BENCH_OFFLINE_PYTHON:-python3}" root=/tmp/bench-offline-root site=/tmp/bench-offline-site
    local out="${OUT:-/tmp/bench-offline-out}" res=/tmp/bench-offline-results
    [ -d "$bundle/whl" ] || { echo "no $bundle/: run 'bash scripts/bench-offline.sh pack' where there is network" >&2; return 2; }
    mkdir -p "$root" "$out" && rm -rf "$site" "$res"
    for deb in "$bundle"/deb/*.deb; do dpkg -x "$deb" "$root" || return 3; done
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$bundle"/whl/*.whl || return 3
    export PATH="$root/usr/bin:$PATH" LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu"
    export PYTHONPATH="$site" BENCH_PYTHON="$py" PYTHONUNBUFFERED=1
    wrk --version | head -1; redis-server --version; "$py" --version
    timeout "${BENCH_LIMIT:-430}" bash scripts/bench-multicore.sh --out "$res" "$@" 2>&1 | tee "$out/log.txt"
    local status=${PIPESTATUS[0]}
    for name in results.md results.json; do
        if [ -f "$res/$name" ]; then cp "$res/$name" "$out/"; fi
    done
    return "$status"
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
