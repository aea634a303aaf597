"""Accounting for every request of a run: the per-fault table, and the cross-checks of what the
gateway recorded (usage records and budget spend) against what the clients saw."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from policies.backend import team_key
from policies.limits import UsageRecord
from tests.bench.loadgen import percentiles
from tests.chaos.scenarios import ADMIN_KEY, JOB_RUNS, KEY_NAMES
from tests.chaos.verdicts import OUTCOMES, Verdict

_PAGE = 1000


@dataclass
class Row:
    """One fault's requests."""

    fault: str
    counts: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        latency = percentiles(self.latencies_ms, (50, 99))
        return {"fault": self.fault, "sent": sum(self.counts.values()),
                **{outcome: self.counts[outcome] for outcome in OUTCOMES},
                "p50_ms": latency.get("p50"), "p99_ms": latency.get("p99")}


def table(verdicts: Iterable[Verdict], order: Sequence[str]) -> list[dict[str, Any]]:
    """A row per fault, in ``order``, then a total row."""
    rows = {name: Row(name) for name in order}
    total = Row("all")
    for verdict in verdicts:
        for row in (rows.setdefault(verdict.row, Row(verdict.row)), total):
            row.counts[verdict.outcome] += 1
            row.latencies_ms.append(verdict.latency_ms)
    return [row.as_dict() for row in (*rows.values(), total) if row.counts]


def usage_records(base_url: str, team: str, start: float, end: float, *, window_s: float = 30.0) -> list[UsageRecord]:
    """Every usage record of ``team`` with ``start <= ts <= end``, through the admin key. Read in
    time windows, halved while one holds a full page: records replayed after a Redis outage sit
    after newer ones in the stream, so paging by the last timestamp seen could skip some."""
    records: list[UsageRecord] = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as http:
        low = start
        while low <= end:
            high = min(low + window_s, end)
            reply = http.get("/v1/usage", params={"team": team, "start": low, "end": high, "limit": _PAGE})
            reply.raise_for_status()
            page = reply.json()
            if page["has_more"]:
                window_s /= 2
                continue
            last = high >= end
            # Both ends are inclusive: a record on ``high`` belongs to the next window.
            records += [msgspec.convert(record, UsageRecord) for record in page["data"]
                        if last or record["ts"] < high]
            if last:
                return records
            low = high
    return records


def spend(redis_client: Any, prefix: str, team: str) -> float:
    """The team's daily spend counters added up (a run may cross midnight UTC)."""
    keys = list(redis_client.scan_iter(match=team_key(prefix, team, "team:spend:d:*"), count=1000))
    return sum(float(value) for value in redis_client.mget(keys)) if keys else 0.0


def usage_problems(verdicts: Sequence[Verdict], records: Mapping[str, list[UsageRecord]],
                   spent: Mapping[str, float]) -> list[str]:
    """What does not add up between the clients' view and the gateway's records; empty when
    usage and budgets are exact:

    * every record is filed under its team and key; a response has one record, a background one
      a record per run (``JOB_RUNS`` at most: a run cut short, by a replica stopping or by the
      store failing as it ended, is run again from the start, and its tokens were spent);
    * every response a client learned of has its records under the client's team, never the
      other's, and a completed one a record with the tokens its ``usage`` reported;
    * a record no client learned of belongs to a request that got no response: an error before
      the first byte (no tokens) or a reply cut by a SIGKILL;
    * each team's budget spend equals the cost of its records.
    """
    by_response, problems = _index(records)
    seen: set[str] = set()
    for verdict in verdicts:
        if verdict.response_id is None:
            continue
        seen.add(verdict.response_id)
        found = by_response.get(verdict.response_id, [])
        where = f"{verdict.row} #{verdict.index}: response {verdict.response_id}"
        if not found:
            problems.append(f"{where} has no usage record")
        elif any(record.team != verdict.team for record in found):
            problems.append(f"{where} of {verdict.team} was charged to {[record.team for record in found]}")
        elif len(found) > (JOB_RUNS if verdict.background else 1):
            problems.append(f"{where} has {len(found)} usage records: {found}")
        elif verdict.usage is not None and verdict.usage not in {(r.input_tokens, r.output_tokens) for r in found}:
            problems.append(f"{where}: usage {verdict.usage} but records {found}")
    unseen = [record for response_id, found in by_response.items() if response_id not in seen for record in found]
    charged = [record for record in unseen if record.input_tokens or record.output_tokens or record.cost]
    without = Counter(verdict.outcome for verdict in verdicts if verdict.response_id is None)
    if len(charged) > without["killed"]:
        problems.append(f"{len(charged)} records with tokens belong to no response a client saw; "
                        f"{without['killed']} replies were cut by SIGKILL")
    if len(unseen) > without["failed"] + without["killed"] + without["lost"]:
        problems.append(f"{len(unseen)} records belong to no response a client saw, more than the "
                        f"{without['failed'] + without['killed'] + without['lost']} requests without one")
    for team, team_records in records.items():
        cost = sum(record.cost for record in team_records)
        if not math.isclose(cost, spent.get(team, 0.0), rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{team}: budget spend {spent.get(team, 0.0)!r} but its records cost {cost!r}")
    return problems


def _index(records: Mapping[str, list[UsageRecord]]) -> tuple[dict[str, list[UsageRecord]], list[str]]:
    """The records of each response id, and what is wrong with where records are filed."""
    by_response: dict[str, list[UsageRecord]] = {}
    problems: list[str] = []
    for team, team_records in records.items():
        for record in team_records:
            if record.team != team or record.key != KEY_NAMES[team]:
                problems.append(f"record of {record.response_id} filed under {team} says {record.team}/{record.key}")
            if record.response_id is None:
                problems.append(f"a record without a response id: {record}")
            else:
                by_response.setdefault(record.response_id, []).append(record)
    return by_response, problems
