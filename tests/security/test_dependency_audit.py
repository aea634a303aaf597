"""The offline dependency audit (scripts/advisory_check.py) against the committed advisory snapshot
(security/advisories.json): what it flags, what it passes, and that the snapshot covers the lock."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from packaging.utils import canonicalize_name

from scripts import advisory_check
from scripts.advisory_check import Locked, Snapshot, find_hits, load_snapshot, locked_packages, unchecked

SNAPSHOT = load_snapshot(advisory_check.DEFAULT_SNAPSHOT)
LOCKED = locked_packages(advisory_check.DEFAULT_LOCK.read_text())
PYPA = "pypa/advisory-database"


def lock_text(*packages: tuple[str, str]) -> str:
    """A uv.lock holding these (name, version) pairs from PyPI, and the project itself."""
    registry = 'source = { registry = "https://pypi.org/simple" }'
    entries = [f'[[package]]\nname = "{name}"\nversion = "{version}"\n{registry}\n' for name, version in packages]
    entries.append('[[package]]\nname = "interlock"\nversion = "0.1.0"\nsource = { editable = "." }\n')
    return "version = 1\n\n" + "\n".join(entries)


def snapshot_with(*affected: dict[str, Any], withdrawn: str | None = None) -> Snapshot:
    """A one-advisory snapshot whose affected entries are given in the committed file's format."""
    advisory: dict[str, Any] = {
        "id": "TEST-1",
        "aliases": ["CVE-0000-0001"],
        "affected": list(affected),
        "source": {"repository": "example/db", "path": "TEST-1.yaml", "commit": "0" * 40},
    }
    if withdrawn:
        advisory["withdrawn"] = withdrawn
    document = {
        "as_of": "2026-01-01",
        "limits": "test data",
        "advisories": [advisory],
        "sources": [{"repository": "example/db", "licence": "CC0", "coverage": "test", "checked": {"demo": 1}}],
    }
    return msgspec.json.decode(json.dumps(document), type=Snapshot)


def hit_ids(snapshot: Snapshot, *packages: tuple[str, str]) -> dict[str, list[str]]:
    hits = find_hits(locked_packages(lock_text(*packages)), snapshot)
    found: dict[str, list[str]] = {}
    for hit in hits:
        found.setdefault(f"{hit.package.name} {hit.package.version}", []).append(hit.advisory.id)
    return found


def test_known_vulnerable_pins_are_flagged_with_their_advisories() -> None:
    found = hit_ids(SNAPSHOT, ("aiohttp", "3.8.0"), ("requests", "2.19.1"))
    assert {"PYSEC-2023-120", "PYSEC-2023-246", "PYSEC-2024-24"} <= set(found["aiohttp 3.8.0"])
    assert "PYSEC-2023-247" not in found["aiohttp 3.8.0"]  # fixed in 3.8.0 itself
    assert {"PYSEC-2018-28", "PYSEC-2023-74", "GHSA-9wx4-h78v-vm56"} <= set(found["requests 2.19.1"])


def test_fixed_versions_pass_and_withdrawn_advisories_are_skipped() -> None:
    # aiohttp's PYSEC-2022-43059 and redis's PYSEC-2023-73 were withdrawn with no fixed version:
    # counted, they would flag every release.
    assert hit_ids(SNAPSHOT, ("aiohttp", "3.9.4"), ("requests", "2.32.0"), ("redis", "5.0.0")) == {}
    withdrawn = snapshot_with(
        {"package": "demo", "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]},
        withdrawn="2026-01-02T00:00:00Z",
    )
    assert hit_ids(withdrawn, ("demo", "1.0")) == {}


def test_a_hit_names_the_advisory_its_aliases_and_every_fixed_release() -> None:
    lines = {str(hit) for hit in find_hits([Locked("pyyaml", "5.3"), Locked("redis", "4.5.3")], SNAPSHOT)}
    assert "VULNERABLE pyyaml 5.3: PYSEC-2021-142 (CVE-2020-14343, GHSA-8q59-q68h-6hv4), fixed in 5.4" in lines
    assert "VULNERABLE redis 4.5.3: PYSEC-2023-46 (CVE-2023-28859), fixed in 4.4.4, 4.5.4" in lines


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("0.9", False),
        ("1.0.0a1", False),
        ("1.0", True),
        ("1.4.2", True),
        ("1.5.0rc1", True),
        ("1.5.0", False),
        ("2.0.0", True),
        ("2.1.0", True),
        ("2.1.0.post1", False),
        ("2.2", False),
    ],
)
def test_introduced_fixed_and_last_affected_follow_pep_440_order(version: str, affected: bool) -> None:
    # Two intervals in one range, given out of order as some advisories do: [1.0, 1.5.0) and [2.0.0, 2.1.0].
    events = [{"introduced": "2.0.0"}, {"last_affected": "2.1.0"}, {"introduced": "1.0"}, {"fixed": "1.5.0"}]
    snapshot = snapshot_with({"package": "demo", "ranges": [{"type": "ECOSYSTEM", "events": events}]})
    assert bool(hit_ids(snapshot, ("demo", version))) is affected


def test_introduced_zero_covers_every_release_before_the_fix_pre_releases_included() -> None:
    snapshot = snapshot_with(
        {"package": "demo", "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.9.0"}]}]}
    )
    assert hit_ids(snapshot, ("demo", "0.0.1a1"), ("demo", "3.9.0rc0"), ("demo", "3.9.0"), ("demo", "3.10")) == {
        "demo 0.0.1a1": ["TEST-1"],
        "demo 3.9.0rc0": ["TEST-1"],
    }


def test_an_explicit_versions_list_is_matched_by_pep_440_equality() -> None:
    snapshot = snapshot_with({"package": "demo", "versions": ["2024.07.04", "2.0.1"]})
    assert hit_ids(snapshot, ("demo", "2024.7.4"), ("demo", "2.0.1"), ("demo", "2.0.2"), ("demo", "2.0.1.post1")) == {
        "demo 2024.7.4": ["TEST-1"],
        "demo 2.0.1": ["TEST-1"],
    }


def test_packages_the_snapshot_does_not_list_are_ignored_and_reported_as_unchecked() -> None:
    locked = locked_packages(lock_text(("left-pad-py", "0.0.1"), ("Demo", "1.0")))
    assert [package.name for package in locked] == ["left-pad-py", "demo"]  # the editable project is left out
    snapshot = snapshot_with({"package": "demo", "versions": ["0.1"]})
    assert find_hits(locked, snapshot) == []
    assert unchecked(locked, snapshot) == ["left-pad-py"]


@pytest.mark.parametrize(
    ("affected", "complaint"),
    [
        ({"package": "Demo_Pkg", "versions": ["1.0"]}, "not PEP 503 normalised"),
        (
            {"package": "demo", "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]}]},
            "exactly one",
        ),
        ({"package": "demo", "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "not a version"}]}]}, "PEP 440"),
        ({"package": "demo", "ranges": [{"type": "GIT", "events": [{"introduced": "0"}]}]}, "ECOSYSTEM"),
        ({"package": "demo", "ranges": [{"type": "ECOSYSTEM", "events": [{"limit": "2.0"}]}]}, "unknown field"),
    ],
)
def test_a_malformed_snapshot_is_refused_with_where_and_why(affected: dict[str, Any], complaint: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=complaint) as refused:
        snapshot_with(affected)
    assert "$.advisories[0].affected[0]" in str(refused.value)


def test_main_exits_1_on_a_hit_0_when_clean_2_when_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vulnerable, clean = tmp_path / "vulnerable.lock", tmp_path / "clean.lock"
    vulnerable.write_text(lock_text(("requests", "2.19.1")))
    clean.write_text(lock_text(("requests", "2.32.0")))
    assert advisory_check.main(["--lock", str(vulnerable)]) == 1
    assert "VULNERABLE requests 2.19.1: PYSEC-2018-28 (CVE-2018-18074), fixed in 2.20.0" in capsys.readouterr().out
    assert advisory_check.main(["--lock", str(clean)]) == 0
    assert f"advisory snapshot of {SNAPSHOT.as_of.isoformat()} from {PYPA}" in capsys.readouterr().out
    assert advisory_check.main(["--lock", str(tmp_path / "missing.lock")]) == 2
    malformed = tmp_path / "advisories.json"
    malformed.write_text('{"as_of": "yesterday"}')
    assert advisory_check.main(["--lock", str(clean), "--snapshot", str(malformed)]) == 2
    assert "$.as_of" in capsys.readouterr().err


def test_the_snapshot_covers_every_locked_package() -> None:
    """Fails when a dependency is added without refreshing the snapshot (docs/security.md says how)."""
    assert len(LOCKED) > 100
    assert unchecked(LOCKED, SNAPSHOT) == []


def test_the_snapshot_is_consistent_with_its_provenance() -> None:
    ids = [advisory.id for advisory in SNAPSHOT.advisories]
    assert len(ids) == len(set(ids))
    (pypa,) = [source for source in SNAPSHOT.sources if source.repository == PYPA]
    read_from_pypa = Counter(
        affected.package
        for advisory in SNAPSHOT.advisories
        if advisory.source.repository == PYPA
        for affected in advisory.affected
    )
    assert read_from_pypa == {name: count for name, count in pypa.checked.items() if count}
    assert all(name == canonicalize_name(name) for name in pypa.checked)
    known = {source.repository for source in SNAPSHOT.sources}
    assert {advisory.source.repository for advisory in SNAPSHOT.advisories} == known
    for staging in pypa.skipped_staging_files:  # each duplicate left out has its numbered advisory in
        assert staging.same_as in ids


def test_the_current_lock_has_no_known_vulnerability_in_the_snapshot() -> None:
    assert find_hits(LOCKED, SNAPSHOT) == []
