"""The official openai SDK and the Agents SDK against the real gateway, both store backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.gateway_server import TEAM_A_KEY, TEAM_B_KEY, RunningGateway
from tests.spec_validation import validate_resource

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


@pytest.fixture
def client(running: RunningGateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=running.base_url + "/v1", api_key=TEAM_A_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("model", ["sim", "sim-chat"])
def test_create_and_stream(client: OpenAI, model: str) -> None:
    raw = client.responses.with_raw_response.create(model=model, input="Hello SDK", instructions="be kind")
    validate_resource(raw.http_response.json())
    response = raw.parse()
    assert response.output_text == "Echo: Hello SDK"
    assert response.instructions == "be kind"

    with client.responses.stream(model=model, input="Hello stream") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Echo: Hello stream" == final.output_text
    assert final.status == "completed" and final.usage is not None and final.usage.total_tokens > 0


def test_retrieve_input_items_delete(client: OpenAI) -> None:
    created = client.responses.create(model="sim", input=[{"role": "user", "content": "keep this"}])
    fetched = client.responses.retrieve(created.id)
    assert fetched.output_text == created.output_text == "Echo: keep this"
    items = client.responses.input_items.list(created.id)
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == "keep this"  # type: ignore[union-attr]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_previous_response_id_chain(client: OpenAI) -> None:
    first = client.responses.create(model="sim", input="one", store=True)
    second = client.responses.create(model="sim", input="two", previous_response_id=first.id)
    third = client.responses.create(model="sim-chat", input="three", previous_response_id=second.id)
    assert third.output_text == "Echo: three"
    items = client.responses.input_items.list(third.id, order="asc")
    texts = [part.text for item in items.data for part in getattr(item, "content", [])]  # type: ignore[union-attr]
    assert texts == ["one", "Echo: one", "two", "Echo: two", "three"]


@pytest.mark.parametrize("model", ["sim", "sim-chat"])
def test_function_tool_round_trip(client: OpenAI, model: str) -> None:
    with client.responses.stream(model=model, input="Weather in Oslo?", tools=[WEATHER]) as stream:
        first = stream.get_final_response()
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.parsed_arguments == {"city": "Oslo"}  # type: ignore[union-attr]
    second = client.responses.create(model=model, previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
                                      input=[{"type": "function_call_output", "call_id": call.call_id,
                                              "output": "12C and clear"}])
    assert second.output_text == "Tool said: 12C and clear"


def test_other_team_gets_404(client: OpenAI, running: RunningGateway) -> None:
    created = client.responses.create(model="sim", input="private")
    with OpenAI(base_url=running.base_url + "/v1", api_key=TEAM_B_KEY, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="sim", input="x", previous_response_id=created.id)


def test_sdk_errors_are_typed(client: OpenAI, running: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="nope", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="sim", input="x", max_output_tokens=3)
    assert bad.value.param == "max_output_tokens"
    with OpenAI(base_url=running.base_url + "/v1", api_key="wrong", max_retries=0) as stranger, \
            pytest.raises(openai.AuthenticationError):
        stranger.responses.create(model="sim", input="x")


@pytest.mark.parametrize("streamed", [False, True])
def test_agents_sdk_runs_a_function_tool(running: RunningGateway, streamed: bool) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        calls.append(city)
        return f"Sunny in {city}"

    async def main() -> str:
        sdk = openai.AsyncOpenAI(base_url=running.base_url + "/v1", api_key=TEAM_A_KEY, max_retries=0)
        try:
            agent = Agent(name="weather", instructions="You are helpful.", tools=[get_weather],
                          model=OpenAIResponsesModel(model="sim", openai_client=sdk))
            if streamed:
                result = Runner.run_streamed(agent, "What's the weather in Paris?")
                async for _event in result.stream_events():
                    pass
            else:
                result = await Runner.run(agent, "What's the weather in Paris?")
            return str(result.final_output)
        finally:
            await sdk.close()

    final = asyncio.run(main())
    assert calls == ["Paris"]
    assert final == "Tool said: Sunny in Paris"
