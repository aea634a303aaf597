"""The offline dependency audit: every version in uv.lock against the committed advisory snapshot.

``uv run --frozen python scripts/advisory_check.py [--lock uv.lock] [--snapshot security/advisories.json]``
prints each locked version that lies inside an advisory's affected range and exits 1 if there is
one, 0 if there is none, 2 if the lock or the snapshot cannot be read. ``scripts/audit.sh`` runs it
when PyPI's vulnerability service gives no data (docs/security.md, "Dependency audit").

Ranges follow OSV's ECOSYSTEM semantics with PEP 440 ordering: events sorted by version, a version
is affected from an ``introduced`` until a ``fixed`` (excluded) or past a ``last_affected``; an
advisory's explicit ``versions`` are affected too. Withdrawn advisories are skipped.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCK = ROOT / "uv.lock"
DEFAULT_SNAPSHOT = ROOT / "security" / "advisories.json"
_BEFORE_EVERYTHING = "0"  # OSV's "introduced" bound that precedes every version, pre-releases included
_LOCAL_SOURCES = {"editable", "virtual"}  # the project itself and workspace members: not published packages


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion as error:
        raise ValueError(f"not a PEP 440 version: {text!r}") from error


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One OSV range event: exactly one of its fields is set."""

    introduced: str | None = None  # affected from this version on ("0": from the first release)
    fixed: str | None = None  # the first version no longer affected
    last_affected: str | None = None  # the last version still affected

    def __post_init__(self) -> None:
        bounds = [bound for bound in (self.introduced, self.fixed, self.last_affected) if bound is not None]
        if len(bounds) != 1:
            raise ValueError("an event sets exactly one of introduced, fixed, last_affected")
        if bounds[0] != _BEFORE_EVERYTHING:
            _version(bounds[0])

    def order(self) -> tuple[int, Version | None]:
        """Sort key: "0" before every version, the others by PEP 440 order."""
        bound = self.introduced or self.fixed or self.last_affected or ""
        return (0, None) if bound == _BEFORE_EVERYTHING else (1, Version(bound))


class Range(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An OSV range; only ECOSYSTEM ranges (PyPI versions) are kept in the snapshot."""

    type: str  # always "ECOSYSTEM"
    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        if self.type != "ECOSYSTEM":
            raise ValueError(f"only ECOSYSTEM ranges are supported, not {self.type!r}")

    def contains(self, version: Version) -> bool:
        affected = False
        for event in sorted(self.events, key=Event.order):
            if event.introduced is not None:
                if event.introduced == _BEFORE_EVERYTHING or version >= Version(event.introduced):
                    affected = True
            elif event.fixed is not None:
                if version >= Version(event.fixed):
                    affected = False
            elif event.last_affected is not None and version > Version(event.last_affected):
                affected = False
        return affected


class Affected(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The versions of one package an advisory covers."""

    package: str  # PEP 503 normalised name
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()  # affected whatever the ranges say

    def __post_init__(self) -> None:
        if self.package != canonicalize_name(self.package):
            raise ValueError(f"package name {self.package!r} is not PEP 503 normalised")
        for version in self.versions:
            _version(version)

    def contains(self, version: Version) -> bool:
        return any(_version(listed) == version for listed in self.versions) or any(
            advisory_range.contains(version) for advisory_range in self.ranges
        )

    def fixed_in(self) -> list[str]:
        return [event.fixed for r in self.ranges for event in r.events if event.fixed is not None]


class Origin(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The file an advisory was read from."""

    repository: str  # owner/name on GitHub
    path: str
    commit: str
    legacy_format: bool = False  # read in the pre-OSV "affects" layout: a range with no introduced starts at "0"


class Advisory(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: str
    aliases: tuple[str, ...]
    affected: tuple[Affected, ...]
    source: Origin
    withdrawn: str | None = None  # when the database withdrew it (a duplicate, or not a vulnerability)


class GhsaLookup(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: str
    package: str
    month: str  # the publication folder tried, YYYY/MM
    found: bool
    note: str | None = None


class StagingFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str  # a PYSEC-0000-CVE-* file: a copy the database keeps until it assigns a number
    same_as: str  # the numbered advisory with the same CVE, which the snapshot holds


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    repository: str
    licence: str
    coverage: str
    checked: dict[str, int] = {}  # package -> advisories found for it in this source
    skipped_staging_files: tuple[StagingFile, ...] = ()
    lookups: tuple[GhsaLookup, ...] = ()  # advisory ids tried where the source cannot be listed by package


class Snapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    as_of: datetime.date  # when the snapshot was assembled
    sources: tuple[Source, ...]
    limits: str  # how far the stored copies lag the live databases
    advisories: tuple[Advisory, ...]

    def checked_packages(self) -> set[str]:
        return {package for source in self.sources for package in source.checked}

    def describe(self) -> str:
        names = ", ".join(source.repository for source in self.sources)
        return f"advisory snapshot of {self.as_of.isoformat()} from {names}"


@dataclass(frozen=True)
class Locked:
    name: str  # PEP 503 normalised
    version: str


@dataclass(frozen=True)
class Hit:
    package: Locked
    advisory: Advisory
    fixed_in: list[str]

    def __str__(self) -> str:
        aliases = f" ({', '.join(self.advisory.aliases)})" if self.advisory.aliases else ""
        fixed = ", ".join(self.fixed_in) or "no release"
        return f"VULNERABLE {self.package.name} {self.package.version}: {self.advisory.id}{aliases}, fixed in {fixed}"


def load_snapshot(path: Path) -> Snapshot:
    return msgspec.json.decode(path.read_bytes(), type=Snapshot)


def locked_packages(lock_text: str) -> list[Locked]:
    """Every published package in a uv.lock, all groups and platforms."""
    packages = tomllib.loads(lock_text).get("package", [])
    return [
        Locked(canonicalize_name(package["name"]), package["version"])
        for package in packages
        if "version" in package and not _LOCAL_SOURCES & package.get("source", {}).keys()
    ]


def find_hits(locked: Iterable[Locked], snapshot: Snapshot) -> list[Hit]:
    live = [advisory for advisory in snapshot.advisories if advisory.withdrawn is None]
    hits = []
    for package in locked:
        version = _version(package.version)
        for advisory in live:
            for affected in advisory.affected:
                if affected.package == package.name and affected.contains(version):
                    hits.append(Hit(package, advisory, affected.fixed_in()))
    return hits


def unchecked(locked: Iterable[Locked], snapshot: Snapshot) -> list[str]:
    """Locked packages no source of the snapshot was searched for: the snapshot predates them."""
    return sorted({package.name for package in locked} - snapshot.checked_packages())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the uv.lock to audit")
    parser.add_argument("--snapshot", type=Path, default=DEFAULT_SNAPSHOT, help="the advisory snapshot")
    args = parser.parse_args(argv)
    try:
        snapshot = load_snapshot(args.snapshot)
        locked = locked_packages(args.lock.read_text())
        hits = find_hits(locked, snapshot)
    except (OSError, ValueError, KeyError) as error:  # TOML and msgspec decoding errors are ValueErrors
        print(f"advisory check failed: {error}", file=sys.stderr)
        return 2
    withdrawn = sum(advisory.withdrawn is not None for advisory in snapshot.advisories)
    print(
        f"{snapshot.describe()}: {len(locked)} locked packages against "
        f"{len(snapshot.advisories) - withdrawn} advisories ({withdrawn} withdrawn, skipped)"
    )
    for name in unchecked(locked, snapshot):
        print(f"not covered: {name} was locked after the snapshot was assembled (refresh it)")
    for hit in hits:
        print(hit)
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
