"""The request path after decoding: resolve the conversation, pick deployments, call the
upstream with retries before the first byte and fallback after, and drive the builder.

    prepare()  model, previous_response_id and item references -> Turn
    open()     first delta from the first deployment that answers (tenacity retries)
    events()   Open Responses events to the end, the response stored before the terminal event
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import msgspec
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from policies.backend import UNREACHABLE
from policies.catalogue import CatalogueModel
from policies.gate import Gate, Ticket, estimate_tokens
from policies.router import Candidate
from policies.tiers import served_tier
from providers.base import Provider
from proxy.adaptation import Adapted, adapt
from proxy.auth import Principal
from proxy.decoding import ResponseRequest
from proxy.errors import ContextTooLong, GatewayError, InvalidRequest, NotFound, UpstreamError
from proxy.ids import new_id
from proxy.resource import new_resource
from proxy.schema.deltas import Delta, Finish
from proxy.schema.items import (
    FunctionCall,
    Item,
    ItemReference,
    OpaqueItem,
)
from proxy.schema.request import Tool
from proxy.schema.response import ResponseResource, Usage
from proxy.schema.upstream import UpstreamRequest
from proxy.sealing import Sealer
from proxy.settings import RetryConfig
from proxy.store import ResponseStore, StoredResponse
from proxy.stored_form import stored_form
from proxy.streaming import Event, ResponseBuilder
from proxy.telemetry import observe_attempt, turn_settled
from proxy.token_count import estimate_tokens as estimate_input_tokens
from proxy.tool_loop import ToolLoopConfig, loop_deadline, run_calls, server_tools
from proxy.truncation import fit_conversation
from tools import ToolRegistry, ToolSpec

log = logging.getLogger("interlock.engine")

PreviousLookup = Callable[[str, str], Awaitable[StoredResponse | None]]
"""``(team, response_id)`` -> the stored response ``previous_response_id`` names, or None."""


@dataclass(slots=True)
class Turn:
    """Everything needed to run one response."""

    principal: Principal
    request: ResponseRequest
    model: CatalogueModel
    resource: ResponseResource
    conversation: list[Item]
    """What the model sees: previous input and output, then this request's input, resolved."""
    history_stored: list[Item]
    """The previous response's input and output, as the store keeps them."""
    new_input: list[Item]
    """This request's input, resolved."""
    tools: list[Tool]
    """The tools as the model sees them (server-side ones with their registered definition)."""
    server_tools: dict[str, ToolSpec]
    """The request's tools the gateway runs itself, by name."""
    max_tool_calls: int
    """Server-side calls allowed for this response."""
    ticket: Ticket
    """The policy's admission: ordered candidates, limits to settle."""
    received: float
    """``time.perf_counter()`` when the gateway started on the request."""
    attempts: int = 0
    """Upstream attempts made so far, retries and fallbacks included."""
    waited_s: float = 0.0
    """Time spent waiting on upstreams for a first byte, and in backoff between attempts."""
    overhead_s: float = 0.0
    """Time to the first upstream byte the gateway spent itself (decoding, policy, limits,
    translation): the elapsed time less ``waited_s``."""
    candidate: Candidate | None = None
    """The candidate that answered the latest model turn."""
    settled: bool = False
    _stored_input: list[Item] | None = None

    @property
    def stored_input(self) -> list[Item]:
        """The input items as the store keeps them (the history's, then this request's in
        ``stored_form``); made when first asked: a response not stored never needs them."""
        if self._stored_input is None:
            self._stored_input = [*self.history_stored, *(stored_form(item) for item in self.new_input)]
        return self._stored_input

    @property
    def store(self) -> bool:
        return self.resource.store


@dataclass(slots=True)
class OpenStream:
    turn: Turn
    builder: ResponseBuilder
    upstream: AsyncGenerator[Delta, None]
    first: Delta
    stream: bool
    error: GatewayError | None = None
    """Set when the upstream failed after the first delta."""


class Engine:
    def __init__(self, *, gate: Gate, store: ResponseStore, providers: Mapping[str, Provider],
                 retry: RetryConfig, sealer: Sealer, tools: ToolRegistry, tool_loop: ToolLoopConfig,
                 session: aiohttp.ClientSession) -> None:
        self.sealer = sealer
        self.tools = tools
        self.tool_loop = tool_loop
        self.session = session
        self.gate = gate
        self.store = store
        self.providers = providers
        self.retry = retry

    # -- preparation ---------------------------------------------------------------------------
    async def prepare(self, principal: Principal, request: ResponseRequest, *, response_id: str | None = None,
                      lookup_previous: PreviousLookup | None = None, charge_limits: bool = True,
                      received: float | None = None, overlap_admission: bool = False) -> Turn:
        """Resolve the request into a ``Turn``.

        ``response_id``: the id to use (a background job resumes the response it queued).
        ``lookup_previous``: where ``previous_response_id`` is looked up (a WebSocket connection keeps
        ``store: false`` responses of its own); default the team's store.
        ``charge_limits``: False when the request's limits were already charged (a background job
        admitted when it was queued).
        ``received``: ``time.perf_counter()`` when the request arrived, for the overhead figure.
        ``overlap_admission``: the turn goes straight to ``open``, which may then make the upstream
        call while the limits still answer (``Gate.admit``), and waits for them before the first
        byte.

        The policy admits the request last, after every lookup that may refuse it, so a refused
        request takes nothing from the limits."""
        received = time.perf_counter() if received is None else received
        body = request.body
        alias = body.model
        if not isinstance(alias, str) or not alias:
            raise InvalidRequest("'model' is required.", param="model", code="missing_required_parameter")
        model = self.gate.policies.current.catalogue.get(alias)
        if model is None:
            raise NotFound(f"The model '{alias}' does not exist or you do not have access to it.",
                           param="model", code="model_not_found")
        if "/v1/responses" not in model.endpoints:
            raise InvalidRequest(f"The model '{alias}' is not served on /v1/responses; it supports "
                                 f"{', '.join(model.endpoints) or 'no endpoint'}.", param="model",
                                 code="unsupported_endpoint")
        if body.background is True and body.store is False:
            raise InvalidRequest("Background responses must be stored: 'background': true needs 'store': true.",
                                 param="background", code="invalid_value")

        history: list[Item] = []
        history_stored: list[Item] = []
        previous_id = body.previous_response_id
        if isinstance(previous_id, str):
            previous = await (lookup_previous or self._stored)(principal.team, previous_id)
            if previous is None:
                raise NotFound(f"Previous response with id '{previous_id}' not found.",
                               param="previous_response_id", code="previous_response_not_found")
            history_stored = [*previous.input_items, *previous.response.output]
            history = list(history_stored)

        new_items = await self._resolve_references(principal, request.input, history_stored)
        resource = new_resource(request, response_id=response_id or new_id("resp"), model=alias)
        estimate = estimate_tokens(request.size)
        if charge_limits:
            ticket = await self.gate.admit(principal, request, input_tokens=estimate, overlap=overlap_admission)
        else:
            ticket = self.gate.readmit(principal, request, input_tokens=estimate)
        decision = ticket.decision
        resource.store = decision.store
        tools, specs = server_tools(request.tools, self.tools, decision.policy.allows_tool)
        limit = self.tool_loop.max_tool_calls
        if decision.max_tool_calls is not None:
            limit = min(limit, decision.max_tool_calls)
        return Turn(principal=principal, request=request, model=decision.model, resource=resource,
                    conversation=[*history, *new_items], history_stored=history_stored, new_input=new_items,
                    tools=tools, server_tools=specs, max_tool_calls=limit, ticket=ticket, received=received)

    async def _stored(self, team: str, response_id: str) -> StoredResponse | None:
        return await self.store.load(team, response_id)

    async def _resolve_references(self, principal: Principal, items: list[Item], history: list[Item]) -> list[Item]:
        wanted = [item.id for item in items if isinstance(item, ItemReference)]
        if not wanted:
            return items
        known: dict[str, Item] = {}
        for item in history:
            ident = item.id if isinstance(item, OpaqueItem) else getattr(item, "id", None)
            if isinstance(ident, str):
                known[ident] = item
        missing = [ident for ident in wanted if ident not in known]
        if missing:
            known.update(await self.store.get_items(principal.team, missing))
        resolved: list[Item] = []
        for index, item in enumerate(items):
            if isinstance(item, ItemReference):
                found = known.get(item.id)
                if found is None:
                    raise NotFound(f"Item with id '{item.id}' not found.", param=f"input[{index}].id",
                                   code="item_not_found")
                resolved.append(found)
            else:
                resolved.append(item)
        return resolved

    # -- upstream ------------------------------------------------------------------------------
    def upstream_request(self, turn: Turn, candidate: Candidate, *, stream: bool) -> tuple[UpstreamRequest, Adapted]:
        """The request as ``candidate`` receives it: fitted to its dialect, and to its context
        window by the ``truncation`` rule (``ContextTooLong`` when it does not fit)."""
        deployment = candidate.deployment
        # The tier is the router's decision: ask the upstream for it only where the deployment
        # serves it natively, never pass on what the client asked.
        body = msgspec.structs.replace(turn.request.body, service_tier=deployment.native_tier or msgspec.UNSET)
        adapted = adapt(turn.conversation, turn.tools, turn.request.tool_choice,
                        dialect=deployment.dialect, team=turn.principal.team, sealer=self.sealer)
        instructions = body.instructions if isinstance(body.instructions, str) else None
        window = candidate.spec.context_window
        items = adapted.items if window is None else fit_conversation(
            adapted.items, truncation=body.truncation, context_window=window,
            fixed_tokens=estimate_input_tokens([], instructions=instructions, tools=adapted.tools))
        request = UpstreamRequest(body=body, items=items, tools=adapted.tools, tool_choice=adapted.tool_choice,
                                  instructions=instructions, deployment=deployment, stream=stream)
        return request, adapted

    async def open(self, turn: Turn, *, stream: bool) -> OpenStream:
        """Reach the first delta: retry each candidate, then fall back to the next. Errors that
        are the caller's (4xx from the upstream) end the search at once. A request no candidate
        answers is settled here, as nothing else will see it."""
        upstream: AsyncGenerator[Delta, None] | None = None
        try:
            upstream, first = await self._connect(turn, stream)
            await turn.ticket.confirm()
        except BaseException as exc:
            if upstream is not None:  # the limits refused it while the upstream was answering
                await upstream.aclose()
            await asyncio.shield(self._settle(turn))
            refusal = turn.ticket.refusal
            if refusal is not None and refusal is not exc and isinstance(exc, GatewayError):
                raise refusal from None  # a refused request gets the refusal, whatever the upstream said
            raise
        return OpenStream(turn=turn, builder=ResponseBuilder(turn.resource), upstream=upstream, first=first,
                          stream=stream)

    async def _connect(self, turn: Turn, stream: bool) -> tuple[AsyncGenerator[Delta, None], Delta]:
        last_error: GatewayError | None = None
        for candidate in turn.ticket.route.candidates:
            provider = self.providers[candidate.deployment.dialect]
            try:
                request, adapted = self.upstream_request(turn, candidate, stream=stream)
            except ContextTooLong as exc:  # a deployment with a larger window may still take it
                last_error = exc
                continue
            try:
                upstream, first = await self._first_delta(turn, candidate, provider, request, adapted)
            except GatewayError as exc:
                if not exc.retryable:
                    raise
                log.warning("deployment %s failed before the first byte: %s", candidate.spec.name, exc.message)
                last_error = exc
                continue
            if turn.candidate is None:  # the first model turn: what the client waited for
                turn.overhead_s = max(time.perf_counter() - turn.received - turn.waited_s, 0.0)
            turn.candidate = candidate
            return upstream, first
        assert last_error is not None
        raise last_error

    async def _first_delta(
        self, turn: Turn, candidate: Candidate, provider: Provider, request: UpstreamRequest, adapted: Adapted
    ) -> tuple[AsyncGenerator[Delta, None], Delta]:
        config = self.retry
        patience = max(config.backoff_max, candidate.max_wait_s)

        def pause(attempt_number: int, exc: BaseException | None) -> float:
            backoff = min(config.backoff_base * (2 ** (attempt_number - 1)), config.backoff_max)
            hinted = getattr(exc, "retry_after", None)
            return max(backoff, hinted) if isinstance(hinted, int | float) else backoff

        def should_retry(exc: BaseException) -> bool:
            if not isinstance(exc, GatewayError) or not exc.retryable:
                return False
            # A long retry-after is better spent on the next deployment, unless the tier waits
            # for capacity (flex).
            return exc.retry_after is None or exc.retry_after <= patience

        # The first attempt runs without the retry machinery: it is the one that nearly always
        # answers, and building tenacity's state costs more than the rest of the attempt.
        try:
            return await self._attempt(turn, candidate, provider, request, adapted)
        except GatewayError as exc:
            if config.attempts <= 1 or not should_retry(exc):
                raise
            first_pause = pause(1, exc)
        turn.waited_s += first_pause
        await asyncio.sleep(first_pause)
        retrying = AsyncRetrying(stop=stop_after_attempt(config.attempts - 1), reraise=True,
                                 wait=lambda state: pause(state.attempt_number + 1,
                                                          state.outcome.exception() if state.outcome else None),
                                 retry=retry_if_exception(should_retry))
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(turn, candidate, provider, request, adapted)
        finally:
            turn.waited_s += retrying.statistics.get("idle_for", 0.0)
        raise AssertionError("unreachable: tenacity reraises")

    async def _attempt(self, turn: Turn, candidate: Candidate, provider: Provider, request: UpstreamRequest,
                       adapted: Adapted) -> tuple[AsyncGenerator[Delta, None], Delta]:
        """One call of ``candidate``, up to its first delta; its outcome goes to the circuit."""
        turn.attempts += 1
        upstream = observe_attempt(adapted.replies(provider.run(request)), turn, candidate, request)
        waited = time.perf_counter()
        try:
            first = await anext(upstream)
        except StopAsyncIteration:
            await self.gate.report(candidate, False)
            raise UpstreamError("the upstream ended its reply without content") from None
        except GatewayError as exc:
            await upstream.aclose()
            if exc.retryable:  # the caller's own errors say nothing of the deployment's health
                await self.gate.report(candidate, False)
            raise
        except BaseException:
            await upstream.aclose()
            raise
        finally:
            turn.waited_s += time.perf_counter() - waited
        await self.gate.report(candidate, True)
        return upstream, first

    # -- running -------------------------------------------------------------------------------
    async def events(self, opened: OpenStream) -> AsyncGenerator[list[Event], None]:
        """All events of the response in batches (one per upstream delta), ``response.created``
        first and one terminal event last.

        The response is stored before its terminal event is yielded, so a client that reads it
        back (or continues it) right after the last event finds it."""
        builder, turn = opened.builder, opened.turn
        yield builder.start()
        deadline = loop_deadline(self.tool_loop)
        calls_run = 0
        try:
            while True:
                first_item = len(turn.resource.output)
                batch = builder.feed(opened.first)
                if batch:
                    yield batch
                async for delta in opened.upstream:
                    batch = builder.feed(delta)
                    if batch:
                        yield batch
                await opened.upstream.aclose()
                produced = list(turn.resource.output[first_item:])
                calls = [item for item in produced if isinstance(item, FunctionCall)]
                server = [call for call in calls if call.name in turn.server_tools]
                if not server or builder.incomplete:
                    break
                if calls_run + len(server) > turn.max_tool_calls:
                    builder.feed(Finish(reason="max_tool_calls"))
                    break
                if time.monotonic() > deadline:
                    builder.feed(Finish(reason="deadline"))
                    break
                yield builder.next_turn()
                outputs = await run_calls(server, turn.server_tools, config=self.tool_loop, deadline=deadline,
                                          session=self.session)
                calls_run += len(server)
                for output in outputs:
                    yield builder.add_item(output)
                if len(server) < len(calls):
                    break  # the client runs its own calls and continues with previous_response_id
                if time.monotonic() > deadline:
                    builder.feed(Finish(reason="deadline"))
                    break
                turn.conversation = [*turn.conversation, *produced, *outputs]
                opened.upstream, opened.first = await self._connect(turn, opened.stream)
            candidate = turn.candidate
            if candidate is not None:
                # An upstream asked for no tier reports one of its own vocabulary, not ours.
                reported = builder.served_tier if candidate.deployment.native_tier else None
                builder.served_tier = served_tier(candidate.spec, candidate.tier, reported)
            terminal = builder.complete()
        except GatewayError as exc:
            log.log(exc.log_level, "response %s failed mid-stream: %s", turn.resource.id, exc.message)
            if exc.retryable and turn.candidate is not None:
                await self.gate.report(turn.candidate, False)
            opened.error = exc
            terminal = builder.fail(exc)
        finally:
            await opened.upstream.aclose()
            # A client that leaves mid-stream closes this generator: what was used is still counted.
            # Once the admission has answered, settling hands the settlement to the limits before
            # its first wait, so leaving cannot cut it short; until then it runs in a task of its
            # own, shielded.
            settling = self._settle(turn)
            await (settling if turn.ticket.answered else asyncio.shield(settling))
        if turn.store:
            await self._save(turn)
        yield terminal

    async def _settle(self, turn: Turn) -> None:
        """Count the response's tokens and cost against the limits and keep its usage record; once
        per turn, whatever happened."""
        if turn.settled:
            return
        turn.settled = True
        try:
            await turn.ticket.confirm()
        except GatewayError:
            return  # refused: the request took nothing from the limits
        turn_settled(turn)
        reported = turn.resource.service_tier if turn.resource.status == "completed" else None
        try:
            await self.gate.settle(turn.ticket, turn.candidate, turn.resource.usage or Usage(),
                                   reported_tier=reported, response_id=turn.resource.id)
        except Exception:  # the response is already the client's; a lost record must not fail it
            log.exception("could not record the usage of response %s", turn.resource.id)

    async def _save(self, turn: Turn) -> None:
        resource = turn.resource
        try:
            await self.store.save(turn.principal.team, resource, turn.stored_input)
        except UNREACHABLE:
            if resource.background:
                raise  # its job's lease lapses and a later run stores it
            # The client still gets the answer it paid for, saying it was not stored.
            log.warning("response %s could not be stored: the store is unreachable", resource.id)
            resource.store = False

    async def run(self, opened: OpenStream) -> ResponseResource:
        """Non-streaming: the same events, accumulated; a failure becomes the HTTP error."""
        async for _batch in self.events(opened):
            pass
        if opened.error is not None:
            raise opened.error
        return opened.builder.resource
