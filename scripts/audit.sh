#!/usr/bin/env bash
# Audit every locked dependency (uv.lock, all groups) for known vulnerabilities. Exit 1 when a locked
# version has one.
#
# First a canary, a version with a published vulnerability, is audited with pip-audit against PyPI's
# vulnerability service. If it is reported, the service works and pip-audit audits the lock. If it
# comes back clean, the service gave no data (unreachable, or an index mirror without PyPI's JSON
# API, as on CI's machines), and the lock is audited offline against the committed advisory
# snapshot (security/advisories.json, scripts/advisory_check.py) instead; with --strict an unusable
# service then also fails (exit 2) when the snapshot finds nothing. docs/security.md has the details.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
strict=false
if [[ "${1:-}" == "--strict" ]]; then strict=true; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
upgrade_hint="the locked dependencies above have known vulnerabilities: upgrade them (uv lock --upgrade-package NAME)"

audit() {  # audit REQUIREMENTS OUTPUT: pip-audit's JSON report in OUTPUT, its messages in OUTPUT.log
    uv run --frozen pip-audit --requirement "$1" --no-deps --disable-pip --vulnerability-service pypi \
        --progress-spinner off --timeout 20 --format json --output "$2" >"$2.log" 2>&1 || true
}

report() {  # report JSON: print the vulnerable and the skipped packages; exit 1 if any is vulnerable
    uv run --frozen python - "$1" <<'EOF'
import json, sys
try:
    with open(sys.argv[1]) as file:
        dependencies = json.load(file)["dependencies"]
except (OSError, ValueError, KeyError):
    sys.exit(3)  # no report: pip-audit itself failed
vulnerable = [d for d in dependencies if d.get("vulns")]
for d in vulnerable:
    ids = ", ".join(f"{v['id']} (fixed in {', '.join(v['fix_versions']) or 'no release'})" for v in d["vulns"])
    print(f"VULNERABLE {d['name']} {d['version']}: {ids}")
for d in dependencies:
    if "skip_reason" in d:
        print(f"not audited: {d['skip_reason']}")
sys.exit(1 if vulnerable else 0)
EOF
}

echo "requests==2.19.1" >"$work/canary.txt"
audit "$work/canary.txt" "$work/canary.json"
canary=0
report "$work/canary.json" >/dev/null || canary=$?
if [[ $canary != 1 ]]; then  # 1: the canary's vulnerability was reported, the service works
    echo "PyPI's vulnerability service gave no data for a version with a known vulnerability"
    echo "(requests 2.19.1); pip-audit said:"
    sed 's/^/    /' "$work/canary.json.log" | tail -n 5
    echo "DEPENDENCY AUDIT AGAINST THE COMMITTED SNAPSHOT (security/advisories.json) instead:"
    status=0
    uv run --frozen python scripts/advisory_check.py || status=$?
    case $status in
        0) echo "no locked version is inside an advisory of the snapshot" ;;
        1) echo "$upgrade_hint"; exit 1 ;;
        *) echo "the snapshot audit failed"; exit 2 ;;
    esac
    if $strict; then echo "--strict: failing because the vulnerability service is unusable"; exit 2; fi
    echo "The snapshot lags the live databases: run 'bash scripts/audit.sh --strict' where pypi.org is reachable."
    exit 0
fi

uv export --frozen --format requirements-txt --no-hashes --no-emit-project --all-groups --quiet \
    --output-file "$work/locked.txt"
echo "auditing $(grep -c '==' "$work/locked.txt") locked packages"
audit "$work/locked.txt" "$work/locked.json"
status=0
report "$work/locked.json" || status=$?
case $status in
    0) echo "no known vulnerabilities in the locked dependencies" ;;
    1) echo "$upgrade_hint" ;;
    *) echo "pip-audit failed:"; cat "$work/locked.json.log"; status=2 ;;
esac
exit "$status"
