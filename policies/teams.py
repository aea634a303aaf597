"""Team policies: ``<policies_dir>/<team>.yaml`` files, the immutable ``Snapshot`` they make with
the gateway config, and the ``PolicyStore`` that swaps snapshots on reload.

A snapshot is built whole or not at all: any invalid file refuses the reload, every problem is
reported as ``file:path: reason``, and the previous snapshot stays in force. Requests hold the
snapshot they started with, so a reload never disturbs one in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import msgspec
import yaml

from policies.catalogue import Catalogue, CatalogueModel
from policies.resolve import Layer, ResolvedPolicy, resolve, rules_of, tier_conflict
from policies.router import Prepared, prepare
from policies.rules import Rules, TeamFile
from proxy.auth import KeyRing, Principal
from proxy.errors import AuthenticationFailed
from proxy.settings import ConfigError, KeyConfig, Settings, TeamConfig, load_settings

log = logging.getLogger("interlock.policies")

_TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_GLOB_CHARS = frozenset("*?[")


class PolicyError(Exception):
    """Policies or the catalogue are invalid; ``errors`` holds one ``file:path: reason`` each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything policy-related in force at one moment; never changed once built."""

    settings: Settings
    catalogue: Catalogue
    keyring: KeyRing
    """Authenticates keys of the ``teams`` section and of every team file."""
    policies: dict[tuple[str, str | None], ResolvedPolicy]
    """By ``(team, key name)``, and ``(team, None)`` for the team's own rules."""
    global_policy: ResolvedPolicy
    """Built-in defaults under the ``policy`` section: what a team without rules gets."""
    _prepared: dict[tuple[str, str | None, str], Prepared] = field(default_factory=dict, repr=False, compare=False)

    def policy(self, principal: Principal) -> ResolvedPolicy:
        """The rules for a request authenticated as ``principal``; 401 when a reload removed its
        key since it was authenticated."""
        found = self.policies.get((principal.team, principal.key_name))
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found

    def team_policy(self, team: str, key: str | None = None) -> ResolvedPolicy:
        """A team's rules (with a key's on top when ``key`` names one); unknown teams get the
        global rules."""
        found = self.policies.get((team, key)) or self.policies.get((team, None))
        return found if found is not None else self.global_policy

    def prepared(self, policy: ResolvedPolicy, model: CatalogueModel) -> Prepared:
        """The static part of routing ``model`` under ``policy``, computed once per snapshot."""
        key = (policy.team, policy.key, model.alias)
        found = self._prepared.get(key)
        if found is None or found.policy is not policy or found.model is not model:
            found = self._prepared[key] = prepare(model, policy)
        return found

    @property
    def teams(self) -> list[str]:
        return sorted({team for team, _ in self.policies})


def build_snapshot(settings: Settings, *, config_path: Path | None, policies_dir: Path | None,
                   catalogue: Catalogue) -> Snapshot:
    """Read every team file and validate the whole; raises ``PolicyError`` with every problem,
    sorted by file and path.

    A tier conflict (default above max) is reported once, at the most general layer that has it.
    """
    errors: list[str] = []
    config_name = str(config_path) if config_path else "settings"
    files = _read_team_files(policies_dir, errors) if policies_dir else {}
    checker = _Checker(settings, errors)
    checker.rules(config_name, "$.policy", settings.policy)
    global_layers: list[Layer] = [("global", settings.policy)]
    global_policy = resolve("", None, global_layers)
    global_conflict = tier_conflict(global_policy)
    if global_conflict:
        errors.append(f"{config_name}:$.policy.service_tier: {global_conflict}")

    teams: dict[str, list[KeyConfig]] = {team: list(config.keys) for team, config in settings.teams.items()}
    policies: dict[tuple[str, str | None], ResolvedPolicy] = {}
    for team in sorted(set(teams) | set(files)):
        path, document = files.get(team, (None, TeamFile()))
        configured = settings.teams.get(team)
        listed: list[Layer] = [("team", Rules(tools=configured.tools))] if configured and configured.tools else []
        team_layers = [*global_layers, *listed, ("team", rules_of(document))]
        team_policy = policies[(team, None)] = resolve(team, None, team_layers)
        team_conflict = tier_conflict(team_policy)
        if team_conflict and not global_conflict:
            errors.append(f"{path}:$.service_tier: {team_conflict}")
        if path is not None:
            checker.rules(str(path), "$", document)
        names: set[str] = set()
        for index, key in enumerate(teams.get(team, [])):  # the gateway file's keys: the team's rules
            name = key.name or key.sha256[:8]
            if name in names:
                errors.append(f"{config_name}:$.teams.{team}.keys[{index}].name: key name '{name}' is used twice "
                              f"in team '{team}'")
            names.add(name)
            policies[(team, name)] = msgspec.structs.replace(team_policy, key=name)
        for index, entry in enumerate(document.keys):
            where = f"{path}:$.keys[{index}]"
            checker.rules(str(path), f"$.keys[{index}]", entry)
            name = entry.name or entry.sha256[:8]
            if name in names:
                errors.append(f"{where}.name: key name '{name}' is used twice in team '{team}'")
            names.add(name)
            key_policy = policies[(team, name)] = resolve(team, name, [*team_layers, ("key", rules_of(entry))])
            key_conflict = tier_conflict(key_policy)
            if key_conflict and not team_conflict:
                errors.append(f"{where}.service_tier: {key_conflict}")
            teams.setdefault(team, []).append(KeyConfig(sha256=entry.sha256, name=name))
    checker.digests(teams, files, config_name)
    if errors:
        raise PolicyError(sorted(errors))
    merged = msgspec.structs.replace(settings, teams={team: TeamConfig(keys=keys) for team, keys in teams.items()})
    return Snapshot(settings=settings, catalogue=catalogue, keyring=KeyRing(merged), policies=policies,
                    global_policy=global_policy)


class _Checker:
    """Checks that need the catalogue: names without glob characters must exist."""

    def __init__(self, settings: Settings, errors: list[str]) -> None:
        self._models = set(settings.models)
        self._providers = set(settings.providers)
        self._errors = errors

    def rules(self, file: str, path: str, rules: Rules) -> None:
        self._names(file, f"{path}.models", rules.models, self._models, "model")
        for rule in ("allow", "deny", "prefer"):
            listed = getattr(rules.providers, rule) if rules.providers else None
            self._names(file, f"{path}.providers.{rule}", listed, self._providers, "provider")
        models = rules.limits.models if rules.limits else None
        for pattern in models or {}:
            if not any(fnmatchcase(alias, pattern) for alias in self._models):
                self._errors.append(f"{file}:{path}.limits.models.{pattern}: matches no model")

    def _names(self, file: str, path: str, listed: list[str] | None, known: set[str], what: str) -> None:
        for index, name in enumerate(listed or []):
            if not _GLOB_CHARS & set(name) and name not in known:
                self._errors.append(f"{file}:{path}[{index}]: unknown {what} '{name}'")

    def digests(self, teams: dict[str, list[KeyConfig]], files: dict[str, tuple[Path, TeamFile]],
                config_name: str) -> None:
        owners: dict[str, str] = {}
        for team, keys in teams.items():
            for index, key in enumerate(keys):
                if key.sha256 in owners:
                    self._errors.append(f"{_key_location(team, key, files, config_name, index)}.sha256: "
                                        f"the key is also a key of team '{owners[key.sha256]}'")
                owners[key.sha256] = team
                if not _DIGEST.fullmatch(key.sha256):
                    self._errors.append(f"{_key_location(team, key, files, config_name, index)}.sha256: "
                                        "not a hex SHA-256 digest")


def _key_location(team: str, key: KeyConfig, files: dict[str, tuple[Path, TeamFile]], config_name: str,
                  index: int) -> str:
    if team in files:
        path, document = files[team]
        for position, entry in enumerate(document.keys):
            if entry.sha256 == key.sha256:
                return f"{path}:$.keys[{position}]"
    return f"{config_name}:$.teams.{team}.keys[{index}]"


def _read_team_files(directory: Path, errors: list[str]) -> dict[str, tuple[Path, TeamFile]]:
    if not directory.is_dir():
        errors.append(f"{directory}: policies_dir is not a directory")
        return {}
    found: dict[str, tuple[Path, TeamFile]] = {}
    try:
        paths = list(_policy_files(directory))
    except OSError as exc:
        errors.append(f"{directory}: cannot list: {exc.strerror}")
        return {}
    for path in paths:
        team = path.stem
        if not _TEAM_NAME.fullmatch(team):
            errors.append(f"{path}: the file name must be the team's name: letters, digits, '.', '_' or '-'")
            continue
        if team in found:
            errors.append(f"{path}: team '{team}' also has {found[team][0]}")
            continue
        try:
            found[team] = (path, _decode(path))
        except ConfigError as exc:
            errors.append(str(exc))
    return found


def _policy_files(directory: Path) -> Iterator[Path]:
    """``*.yaml`` and ``*.yml``, sorted; hidden entries (Kubernetes' ``..data``) are skipped."""
    for path in sorted(directory.iterdir()):
        if not path.name.startswith(".") and path.suffix in (".yaml", ".yml") and path.is_file():
            yield path


def _decode(path: Path) -> TeamFile:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        return msgspec.convert(data or {}, TeamFile)
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).rpartition(" - at `")
        if not reason:
            reason, where = str(exc), "$`"
        raise ConfigError(f"{path}:{where.rstrip('`')}: {reason}") from None


class PolicyStore:
    """Holds the current ``Snapshot`` and replaces it on ``reload()``.

    ``config_path`` set: a reload re-reads the gateway file too (catalogue, ``teams``, ``policy``;
    other sections need a restart and are ignored until then). Unset: only the team files.
    """

    def __init__(self, settings: Settings, *, config_path: Path | None = None, simulator_url: str | None = None,
                 environ: Callable[[str], str | None] = os.environ.get) -> None:
        """Builds the first snapshot; raises ``PolicyError`` when anything is invalid."""
        self._config_path = config_path
        self._simulator_url = simulator_url
        self._environ = environ
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[list[str]]] = set()
        self._seen = self._fingerprint(settings)
        self._current = self._build(settings)

    @classmethod
    def open(cls, config_path: str | Path, *, simulator_url: str | None = None,
             environ: Callable[[str], str | None] = os.environ.get) -> PolicyStore:
        path = Path(config_path)
        try:
            settings = load_settings(path)
        except ConfigError as exc:
            raise PolicyError([str(exc)]) from None
        return cls(settings, config_path=path, simulator_url=simulator_url, environ=environ)

    @property
    def current(self) -> Snapshot:
        return self._current

    def reload(self) -> list[str]:
        """Re-read the files; on success swap the snapshot and return ``[]``, otherwise keep the
        old one and return every problem as ``file:path: reason``. Thread-safe."""
        with self._lock:
            settings = self._current.settings
            try:
                if self._config_path is not None:
                    settings = load_settings(self._config_path)
                self._seen = self._fingerprint(settings)
                snapshot = self._build(settings)
            except ConfigError as exc:
                errors = [str(exc)]
            except PolicyError as exc:
                errors = exc.errors
            else:
                self._warn_restart_only(settings)
                self._current = snapshot
                log.info("policies reloaded: %d teams", len(snapshot.teams))
                return []
        for error in errors:
            log.error("policy reload refused, the previous policies stay in force: %s", error)
        return errors

    async def watch(self, interval: float = 2.0) -> None:
        """Reload whenever a watched file changes (polled every ``interval`` seconds, off the
        event loop). Run it as a task; it ends when cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await asyncio.to_thread(self._fingerprint, self._current.settings) != self._seen:
                    await asyncio.to_thread(self.reload)
            except Exception:  # a watcher that dies stops every later reload
                log.exception("policy watch failed; trying again in %.1fs", interval)

    def reload_on_sighup(self) -> None:
        """Reload (off the event loop) whenever the process receives SIGHUP. Call from the
        running loop. Only the main thread of a process may own signals: elsewhere (a gateway
        embedded in a test's thread) file changes alone trigger reloads."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload_in_thread)
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            log.info("no reload on SIGHUP here (%s); file changes still reload", exc)

    def _reload_in_thread(self) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.reload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _build(self, settings: Settings) -> Snapshot:
        catalogue = Catalogue(settings, simulator_url=self._simulator_url, environ=self._environ)
        return build_snapshot(settings, config_path=self._config_path, policies_dir=self._policies_dir(settings),
                              catalogue=catalogue)

    def _policies_dir(self, settings: Settings) -> Path | None:
        if settings.policies_dir is None:
            return None
        base = self._config_path.parent if self._config_path else Path.cwd()
        return base / settings.policies_dir

    def _fingerprint(self, settings: Settings) -> tuple[tuple[str, int, int], ...]:
        """Name, modification time and size of every watched file."""
        paths = [self._config_path] if self._config_path else []
        directory = self._policies_dir(settings)
        if directory is not None and directory.is_dir():
            try:
                paths.extend(_policy_files(directory))
            except OSError:
                paths.append(directory)
        marks = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                marks.append((str(path), -1, -1))
            else:
                marks.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(marks)

    def _warn_restart_only(self, settings: Settings) -> None:
        old = self._current.settings
        reloaded = {"providers", "models", "teams", "policy", "policies_dir", "currency"}
        changed = [name for name in Settings.__struct_fields__
                   if name not in reloaded and getattr(old, name) != getattr(settings, name)]
        if changed:
            log.warning("reloaded config changes %s; they take effect after a restart", ", ".join(changed))
