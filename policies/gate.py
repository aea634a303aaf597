"""The policy step of a request: ``Gate``, what the engine calls.

    ticket = await gate.admit(principal, request, input_tokens=len(raw) // 4)
        policy → model allowed → service_tier → store → route (no I/O) → limits (one round trip,
        or, with ``overlap=True``, running beside the upstream call: ``await ticket.confirm()``)
    for candidate in ticket.route.candidates: ...; await gate.report(candidate, ok)
    record = await gate.settle(ticket, candidate, usage, reported_tier=...)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Iterator

from msgspec import UNSET, Struct

from policies.backend import Reachability, connect, limits_store_url
from policies.catalogue import CatalogueModel
from policies.circuit import CircuitBoard
from policies.limits import Limits, MemoryLimits, Reservation, UsageRecord, plan_limits
from policies.limits_redis import RedisLimits
from policies.resolve import ResolvedPolicy
from policies.router import Candidate, CircuitLookup, Route, route
from policies.teams import PolicyStore, Snapshot
from policies.tiers import TierDecision, cost, decide_tier, served_tier
from proxy.auth import Principal
from proxy.decoding import ResponseRequest
from proxy.errors import (
    ContextTooLong,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UnsupportedFeature,
    UpstreamUnavailable,
)
from proxy.schema.content import InputFile, InputImage
from proxy.schema.items import Message
from proxy.schema.response import Usage
from proxy.telemetry import limit_refused, note_model, usage_recorded

log = logging.getLogger("interlock.policies")

_POLICY_CODES = frozenset({"model_not_allowed", "provider_denied", "provider_not_allowed", "region", "tier"})


def estimate_tokens(body_bytes: int) -> int:
    """The input tokens a request body of this size is taken to hold before anything counts
    them: about four bytes a token. Reserved against tpm limits and settled with the real count."""
    return body_bytes // 4


class Decision(Struct, kw_only=True):
    """What the policy says about one request, before limits."""

    policy: ResolvedPolicy
    model: CatalogueModel
    tier: TierDecision
    store: bool
    """Store the response: the request's ``store`` (default true) unless the policy forbids it."""
    max_tool_calls: int | None
    """The request's ``max_tool_calls`` under the policy's ceiling."""
    route: Route


class Ticket(Struct, kw_only=True):
    """An admitted request; hand it back to ``report`` and ``settle``."""

    principal: Principal
    decision: Decision
    reservation: Reservation | None
    """None until an admission running beside the upstream call answers (``confirm``)."""
    started: float
    admission: asyncio.Future[Reservation] | None = None

    @property
    def route(self) -> Route:
        return self.decision.route

    async def confirm(self) -> Reservation:
        """The request's reservation, once its admission has answered; raises the refusal (429,
        or 503 where the limits store is unreachable and the policy fails closed)."""
        if self.reservation is None:
            assert self.admission is not None
            # Shielded: a caller that leaves must not cancel the admission, whose result
            # settlement still needs.
            self.reservation = await asyncio.shield(self.admission)
        return self.reservation

    @property
    def answered(self) -> bool:
        """Whether the admission has answered (either way): ``confirm`` then returns or raises
        without waiting."""
        return self.reservation is not None or (self.admission is not None and self.admission.done())

    @property
    def refusal(self) -> GatewayError | None:
        """What the admission refused the request with, once it has answered."""
        admission = self.admission
        if admission is None or not admission.done() or admission.cancelled():
            return None
        error = admission.exception()
        return error if isinstance(error, GatewayError) else None


def decide(snapshot: Snapshot, policy: ResolvedPolicy, request: ResponseRequest, *,
           circuits: CircuitLookup | None = None, input_tokens: int | None = None,
           rng: random.Random | None = None, explain: bool = False) -> Decision:
    """The policy's answer without I/O; raises the ``GatewayError`` a refusal is. ``explain``:
    chosen deployments say why too (see ``route``)."""
    body = request.body
    alias = body.model
    if not isinstance(alias, str) or not alias:
        raise InvalidRequest("'model' is required.", param="model", code="missing_required_parameter")
    model = snapshot.catalogue.find(alias)
    if model is None:
        raise NotFound(f"The model '{alias}' does not exist or you do not have access to it.",
                       param="model", code="model_not_found")
    if not policy.allows_model(alias):
        raise PermissionDenied(f"Your team's policy does not allow the model '{alias}'.", param="model",
                               code="model_not_allowed")
    tier = decide_tier(body.service_tier if isinstance(body.service_tier, str) else None, policy)
    store = body.store is not False
    if not policy.store:
        for field in ("store", "background"):
            if getattr(body, field) is True:
                raise PermissionDenied(f"Your team's policy does not allow storing responses: '{field}' must not "
                                       "be true.", param=field, code="store_not_allowed")
        store = False
    asked = body.max_tool_calls if isinstance(body.max_tool_calls, int) else None
    ceiling = policy.max_tool_calls
    max_tool_calls = ceiling if asked is None else asked if ceiling is None else min(asked, ceiling)
    cache_key = body.prompt_cache_key if isinstance(body.prompt_cache_key, str) else None
    # Under truncation "auto" the engine fits the conversation to each window: none is too small yet.
    window_tokens = None if body.truncation == "auto" else input_tokens
    found = route(snapshot.prepared(policy, model), tier, circuits=circuits, cache_key=cache_key,
                  needs=needs(request), input_tokens=window_tokens, rng=rng, explain=explain)
    if not found.candidates:
        raise _no_route(found, circuits)
    return Decision(policy=policy, model=model, tier=tier, store=store, max_tool_calls=max_tool_calls, route=found)


def needs(request: ResponseRequest) -> frozenset[str]:
    """Capabilities the request's own input and parameters need (not its history's)."""
    found: set[str] = set()
    if request.tools:
        found.add("tools")
    if request.body.reasoning not in (UNSET, None):
        found.add("reasoning")
    for part in _parts(request):
        if isinstance(part, InputImage):
            found.add("vision")
        elif isinstance(part, InputFile):
            found.add("files")
    return frozenset(found)


def _parts(request: ResponseRequest) -> Iterator[object]:
    for item in request.input:
        if isinstance(item, Message) and isinstance(item.content, list):
            yield from item.content


def _no_route(found: Route, circuits: CircuitLookup | None) -> GatewayError:
    codes = {reason.code for entry in found.considered for reason in entry.reasons}
    details = []
    for entry in found.considered:
        shown = [reason.detail for reason in entry.reasons if reason.code != "unavailable"]
        if shown:
            details.append(f"{entry.deployment}: {', '.join(shown)}")
    summary = "; ".join(details)
    alias = found.alias
    if "circuit_open" in codes and circuits is not None:
        now = time.time()
        waits = [state.retry_at - now for entry in found.considered
                 if (state := circuits(entry.upstream)).retry_at is not None]
        return UpstreamUnavailable(f"Every deployment of '{alias}' is failing and paused; try again shortly.",
                                   retry_after=max(1.0, min(waits, default=1.0)))
    if "context_window" in codes:
        return ContextTooLong(f"The input is too long for every deployment of '{alias}': {summary}.",
                              param="input")
    if "capability" in codes:
        return UnsupportedFeature(f"No deployment of '{alias}' supports this request: {summary}.")
    if codes & _POLICY_CODES:
        return PermissionDenied(f"Your team's policy allows no deployment of '{alias}' for this request: "
                                f"{summary}.", param="model", code="no_allowed_deployment")
    return NotFound(f"The model '{alias}' does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


class Gate:
    """Policies, limits and circuits of one worker process."""

    def __init__(self, policies: PolicyStore, limits: Limits, circuits: CircuitBoard, *,
                 rng: random.Random | None = None) -> None:
        self.policies = policies
        self.limits = limits
        self.circuits = circuits
        self._rng = rng
        self._tasks: list[asyncio.Task[None]] = []
        self._accounting: set[asyncio.Future[None]] = set()
        """Settlements still being counted against the limits (see ``settle``)."""

    @classmethod
    def open(cls, policies: PolicyStore) -> Gate:
        """Limits and circuits where the settings say (``limits_store``); connects lazily."""
        settings = policies.current.settings
        redis = connect(limits_store_url(settings))
        reach = Reachability()
        circuits = CircuitBoard(failures=settings.circuit.failures, cooldown_s=settings.circuit.cooldown_s,
                                redis=redis, prefix=settings.store_prefix, reachability=reach)
        retention = settings.usage_retention_days * 86400.0
        limits: Limits = (MemoryLimits(currency=settings.currency, retention_s=retention) if redis is None else
                          RedisLimits(redis, prefix=settings.store_prefix, currency=settings.currency,
                                      retention_s=retention, reachability=reach))
        return cls(policies, limits, circuits)

    def start(self, *, watch_interval: float = 2.0, circuit_interval: float = 1.0) -> None:
        """Background work, from the running loop: reload on file change and SIGHUP, refresh
        shared circuit state."""
        self.policies.reload_on_sighup()
        self._tasks = [asyncio.create_task(self.policies.watch(watch_interval), name="policy watch"),
                       asyncio.create_task(self.circuits.run(self._upstreams, circuit_interval), name="circuits")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.accounted()
        await self.limits.close()

    async def admit(self, principal: Principal, request: ResponseRequest, *,
                    input_tokens: int | None = None, overlap: bool = False) -> Ticket:
        """Decide, route and take the request from its limits (one Redis round trip), or raise the
        refusal. ``input_tokens`` is an estimate (``len(body) // 4`` will do): it skips
        deployments with a smaller context window and is reserved against tpm limits.

        ``overlap``: the caller will ``confirm`` the ticket before anything reaches the client,
        so where the limits allow it (``Limits.may_overlap``) the round trip runs beside the
        upstream call instead of before it, taking it off the time to first byte."""
        snapshot = self.policies.current
        policy = snapshot.policy(principal)
        decision = decide(snapshot, policy, request, circuits=self.circuits.state, input_tokens=input_tokens,
                          rng=self._rng)
        alias = decision.model.alias
        note_model(alias)
        taking = self._take(principal, policy, alias, input_tokens or 0)
        if overlap and self.limits.may_overlap(policy, alias):
            return Ticket(principal=principal, decision=decision, reservation=None, started=time.monotonic(),
                          admission=asyncio.ensure_future(taking))
        return Ticket(principal=principal, decision=decision, reservation=await taking, started=time.monotonic())

    async def _take(self, principal: Principal, policy: ResolvedPolicy, alias: str, tokens: int) -> Reservation:
        try:
            return await self.limits.admit(policy, alias, reserve_tokens=tokens)
        except GatewayError as exc:
            limit_refused(principal.team, alias, exc.code or exc.type)
            raise

    def readmit(self, principal: Principal, request: ResponseRequest, *, input_tokens: int | None = None) -> Ticket:
        """A ticket for a request whose limits were taken by an earlier ``admit`` (a background
        job run where it was not queued): routed afresh, nothing taken. ``input_tokens`` must be
        the estimate ``admit`` reserved, so ``settle`` returns the same reservation."""
        snapshot = self.policies.current
        policy = snapshot.policy(principal)
        decision = decide(snapshot, policy, request, circuits=self.circuits.state, input_tokens=input_tokens,
                          rng=self._rng)
        plan = plan_limits(policy, decision.model.alias, reserve_tokens=input_tokens or 0, now=time.time())
        return Ticket(principal=principal, decision=decision, reservation=Reservation(plan=plan, statuses=()),
                      started=time.monotonic())

    async def report(self, candidate: Candidate, ok: bool) -> None:
        """An attempt's outcome for the circuit: ``ok=False`` for 5xx, timeouts, 429 and
        connection errors before the first byte or mid-stream; don't report the caller's 4xx."""
        await self.circuits.record(candidate.spec.upstream, ok)

    async def settle(self, ticket: Ticket, candidate: Candidate | None, usage: Usage, *,
                     reported_tier: str | None = None, response_id: str | None = None) -> UsageRecord:
        """Once per request when it ends, success or not: count the tokens and cost (at the
        tier served) and keep the usage record. ``candidate`` is the one that answered (``None``
        when none did), ``usage`` the response's total (tool loops included).

        Returns once the limits store has the settlement, whatever happens to this process
        (``Settlement.sent``), without waiting for its answer: every admission this worker
        makes after it counts it all the same, and ``usage`` and ``close`` wait for the answer
        (``accounted``)."""
        decision = ticket.decision
        tier = served_tier(candidate.spec, candidate.tier, reported_tier) if candidate else decision.tier.tier
        record = UsageRecord(
            ts=time.time(), team=ticket.principal.team, key=ticket.principal.key_name, model=decision.model.alias,
            deployment=candidate.spec.name if candidate else "", tier=tier, input_tokens=usage.input_tokens,
            cached_tokens=usage.input_tokens_details.cached_tokens, output_tokens=usage.output_tokens,
            cost=cost(usage, candidate.spec, tier) if candidate else 0.0,
            latency_ms=(time.monotonic() - ticket.started) * 1000, response_id=response_id)
        usage_recorded(record)
        settlement = self.limits.settle(await ticket.confirm(), record)
        answer = settlement.answer
        if answer is not None:
            self._accounting.add(answer)
            answer.add_done_callback(functools.partial(self._answered, record))
        await settlement.sent
        return record

    def _answered(self, record: UsageRecord, answer: asyncio.Future[None]) -> None:
        self._accounting.discard(answer)
        error = None if answer.cancelled() else answer.exception()
        if error is not None:  # the response is already the client's; a lost record must not fail it
            log.error("could not record the usage of response %s", record.response_id, exc_info=error)

    async def accounted(self) -> None:
        """Wait until every settlement begun so far is counted against the limits."""
        if self._accounting:
            await asyncio.wait(list(self._accounting))

    async def usage(self, team: str, start: float, end: float, *, limit: int = 1000) -> list[UsageRecord]:
        """The team's usage records between two Unix times (the admin endpoint), this worker's
        latest included."""
        await self.accounted()
        return await self.limits.usage(team, start, end, limit=limit)

    def _upstreams(self) -> list[str]:
        return self.policies.current.catalogue.upstreams()
