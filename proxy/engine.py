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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from policies.catalogue import Catalogue, CatalogueModel
from providers.base import Provider
from proxy.adaptation import Adapted, adapt
from proxy.auth import Principal
from proxy.decoding import ResponseRequest
from proxy.errors import GatewayError, InvalidRequest, NotFound, UpstreamError
from proxy.ids import new_id
from proxy.resource import new_resource
from proxy.schema.content import InputText, OutputText
from proxy.schema.deltas import Delta, Finish
from proxy.schema.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    Item,
    ItemReference,
    Message,
    OpaqueItem,
    Reasoning,
)
from proxy.schema.request import Tool
from proxy.schema.response import ResponseResource
from proxy.schema.upstream import Deployment, UpstreamRequest
from proxy.sealing import Sealer
from proxy.settings import RetryConfig
from proxy.store import ResponseStore, StoredResponse
from proxy.streaming import Event, ResponseBuilder
from proxy.tool_loop import ToolLoopConfig, loop_deadline, run_calls, server_tools
from tools import ToolRegistry, ToolSpec

log = logging.getLogger("interlock.engine")

PreviousLookup = Callable[[str, str], Awaitable[StoredResponse | None]]
"""``(team, response_id)`` -> the stored response ``previous_response_id`` names, or None."""

_ID_PREFIX: dict[type, str] = {Message: "msg", FunctionCall: "fc", FunctionCallOutput: "fco",
                               Reasoning: "rs", Compaction: "cmp"}


@dataclass(slots=True)
class Turn:
    """Everything needed to run one response."""

    principal: Principal
    request: ResponseRequest
    model: CatalogueModel
    resource: ResponseResource
    conversation: list[Item]
    """What the model sees: previous input and output, then this request's input, resolved."""
    stored_input: list[Item]
    """The same items with an id on each, as the store keeps them."""
    tools: list[Tool]
    """The tools as the model sees them (server-side ones with their registered definition)."""
    server_tools: dict[str, ToolSpec]
    """The request's tools the gateway runs itself, by name."""
    max_tool_calls: int
    """Server-side calls allowed for this response."""

    @property
    def store(self) -> bool:
        return self.resource.store


@dataclass(slots=True)
class OpenStream:
    turn: Turn
    builder: ResponseBuilder
    upstream: AsyncGenerator[Delta, None]
    first: Delta
    deployment: Deployment
    stream: bool
    error: GatewayError | None = None
    """Set when the upstream failed after the first delta."""


class Engine:
    def __init__(self, *, catalogue: Catalogue, store: ResponseStore, providers: Mapping[str, Provider],
                 retry: RetryConfig, sealer: Sealer, tools: ToolRegistry, tool_loop: ToolLoopConfig,
                 team_tools: Mapping[str, Sequence[str]], session: aiohttp.ClientSession) -> None:
        self.sealer = sealer
        self.tools = tools
        self.tool_loop = tool_loop
        self.team_tools = team_tools
        self.session = session
        self.catalogue = catalogue
        self.store = store
        self.providers = providers
        self.retry = retry
        self._background: set[asyncio.Task[None]] = set()

    # -- preparation ---------------------------------------------------------------------------
    async def prepare(self, principal: Principal, request: ResponseRequest, *, response_id: str | None = None,
                      lookup_previous: PreviousLookup | None = None, charge_limits: bool = True) -> Turn:
        """Resolve the request into a ``Turn``.

        ``response_id``: the id to use (a background job resumes the response it queued).
        ``lookup_previous``: where ``previous_response_id`` is looked up (a WebSocket connection keeps
        ``store: false`` responses of its own); default the team's store.
        ``charge_limits``: False when the request's limits were already charged (a background job
        admitted when it was queued)."""
        body = request.body
        alias = body.model
        if not isinstance(alias, str) or not alias:
            raise InvalidRequest("'model' is required.", param="model", code="missing_required_parameter")
        model = self.catalogue.get(alias)
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
        stored_new = [_stored_form(item) for item in new_items]
        resource = new_resource(request, response_id=response_id or new_id("resp"), model=alias)
        tools, specs = server_tools(request.tools, self.tools, self.team_tools.get(principal.team, ()))
        limit = self.tool_loop.max_tool_calls
        if isinstance(body.max_tool_calls, int):
            limit = min(limit, body.max_tool_calls)
        return Turn(principal=principal, request=request, model=model, resource=resource,
                    conversation=[*history, *new_items], stored_input=[*history_stored, *stored_new],
                    tools=tools, server_tools=specs, max_tool_calls=limit)

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
    def _upstream_request(self, turn: Turn, deployment: Deployment, stream: bool) -> tuple[UpstreamRequest, Adapted]:
        body = turn.request.body
        adapted = adapt(turn.conversation, turn.tools, turn.request.tool_choice,
                        dialect=deployment.dialect, team=turn.principal.team, sealer=self.sealer)
        request = UpstreamRequest(
            body=body,
            items=adapted.items,
            tools=adapted.tools,
            tool_choice=adapted.tool_choice,
            instructions=body.instructions if isinstance(body.instructions, str) else None,
            deployment=deployment,
            stream=stream,
        )
        return request, adapted

    async def open(self, turn: Turn, *, stream: bool) -> OpenStream:
        """Reach the first delta: retry each deployment, then fall back to the next. Errors that
        are the caller's (4xx from the upstream) end the search at once."""
        upstream, first, deployment = await self._connect(turn, stream)
        return OpenStream(turn=turn, builder=ResponseBuilder(turn.resource), upstream=upstream, first=first,
                          deployment=deployment, stream=stream)

    async def _connect(self, turn: Turn, stream: bool) -> tuple[AsyncGenerator[Delta, None], Delta, Deployment]:
        last_error: GatewayError | None = None
        for deployment in turn.model.deployments:
            provider = self.providers[deployment.dialect]
            request, adapted = self._upstream_request(turn, deployment, stream)
            try:
                upstream, first = await self._first_delta(provider, request, adapted)
            except GatewayError as exc:
                if not exc.retryable:
                    raise
                log.warning("deployment %s failed before the first byte: %s", deployment.name, exc.message)
                last_error = exc
                continue
            return upstream, first, deployment
        assert last_error is not None
        raise last_error

    async def _first_delta(
        self, provider: Provider, request: UpstreamRequest, adapted: Adapted
    ) -> tuple[AsyncGenerator[Delta, None], Delta]:
        config = self.retry

        def wait(state: RetryCallState) -> float:
            backoff = min(config.backoff_base * (2 ** (state.attempt_number - 1)), config.backoff_max)
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "retry_after", None)
            return max(backoff, hinted) if isinstance(hinted, int | float) else backoff

        def should_retry(exc: BaseException) -> bool:
            if not isinstance(exc, GatewayError) or not exc.retryable:
                return False
            # A long retry-after is better spent on the next deployment.
            return exc.retry_after is None or exc.retry_after <= config.backoff_max

        retrying = AsyncRetrying(stop=stop_after_attempt(max(config.attempts, 1)), wait=wait,
                                 retry=retry_if_exception(should_retry), reraise=True)
        async for attempt in retrying:
            with attempt:
                upstream = adapted.replies(provider.run(request))
                try:
                    first = await anext(upstream)
                except StopAsyncIteration:
                    raise UpstreamError("the upstream ended its reply without content") from None
                except BaseException:
                    await upstream.aclose()
                    raise
                return upstream, first
        raise AssertionError("unreachable: tenacity reraises")

    # -- running -------------------------------------------------------------------------------
    async def events(self, opened: OpenStream) -> AsyncIterator[list[Event]]:
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
                opened.upstream, opened.first, opened.deployment = await self._connect(turn, opened.stream)
            terminal = builder.complete()
        except GatewayError as exc:
            log.log(exc.log_level, "response %s failed mid-stream: %s", turn.resource.id, exc.message)
            opened.error = exc
            terminal = builder.fail(exc)
        finally:
            await opened.upstream.aclose()
        if turn.store:
            await self._save(turn)
        yield terminal

    async def _save(self, turn: Turn) -> None:
        resource = turn.resource
        await self.store.save(turn.principal.team, resource, turn.stored_input)

    # -- background ----------------------------------------------------------------------------
    async def start_background(self, turn: Turn) -> ResponseResource:
        """Store the response as ``queued`` and run it detached from the request, in this process.
        Clients poll ``GET /v1/responses/{id}``; every state change is stored."""
        resource = turn.resource
        resource.status = "queued"
        await self._save(turn)
        snapshot = msgspec.structs.replace(resource, output=[])
        task = asyncio.create_task(self._run_background(turn), name=f"background {resource.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return snapshot

    async def _run_background(self, turn: Turn) -> None:
        resource = turn.resource
        try:
            resource.status = "in_progress"
            await self._save(turn)
            opened = await self.open(turn, stream=False)
            async for _batch in self.events(opened):
                pass
        except GatewayError as exc:
            ResponseBuilder(resource).fail(exc)
            await self._save(turn)
        except asyncio.CancelledError:
            ResponseBuilder(resource).fail(UpstreamError("The gateway shut down before the response finished.",
                                                         retryable=True))
            await asyncio.shield(self._save(turn))
            raise
        except Exception as exc:  # never leave a stored response in_progress forever
            log.exception("background response %s crashed", resource.id)
            ResponseBuilder(resource).fail(UpstreamError(f"internal error: {type(exc).__name__}", retryable=True))
            await self._save(turn)

    async def close(self) -> None:
        """Cancel background work; each cancelled response is stored as failed."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, opened: OpenStream) -> ResponseResource:
        """Non-streaming: the same events, accumulated; a failure becomes the HTTP error."""
        async for _batch in self.events(opened):
            pass
        if opened.error is not None:
            raise opened.error
        return opened.builder.resource


def _stored_form(item: Item) -> Item:
    """The item as the store keeps and ``input_items`` lists it: with an id and a status, and a
    message's string content as one text part (as OpenAI lists it)."""
    if isinstance(item, OpaqueItem):
        return item if item.id is not None else OpaqueItem({**item.data, "id": new_id("item")})
    changes: dict[str, object] = {}
    if not isinstance(getattr(item, "id", None), str):
        changes["id"] = new_id(_ID_PREFIX.get(type(item), "item"))
    if isinstance(item, Message | FunctionCall | FunctionCallOutput) and not isinstance(item.status, str):
        changes["status"] = "completed"
    if isinstance(item, Message) and isinstance(item.content, str):
        part = OutputText(text=item.content) if item.role == "assistant" else InputText(text=item.content)
        changes["content"] = [part]
    return msgspec.structs.replace(item, **changes) if changes else item
