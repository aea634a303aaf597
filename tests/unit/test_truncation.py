"""``proxy.truncation.fit_conversation`` (the ``truncation`` rule) and the estimate it measures with
(``proxy.token_count``).

Most cases count every item as ten tokens so the arithmetic is plain; hypothesis then builds
conversations of calls, outputs, reasoning and pinned messages and checks the rule's promises.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import ContextTooLong
from proxy.schema.content import InputImage, InputText, OutputText, SummaryText
from proxy.schema.items import FunctionCall, FunctionCallOutput, Item, Message, OpaqueItem, Reasoning
from proxy.schema.request import FunctionTool, Truncation
from proxy.token_count import ITEM_TOKENS, MEDIA_TOKENS, estimate_tokens, item_tokens, text_tokens
from proxy.truncation import fit_conversation

TEN = 10


def ten(_: Item) -> int:
    return TEN


def user(text: str) -> Message:
    return Message(role="user", content=text)


def call(call_id: str) -> FunctionCall:
    return FunctionCall(call_id=call_id, name="lookup", arguments="{}")


def output(call_id: str) -> FunctionCallOutput:
    return FunctionCallOutput(call_id=call_id, output="found")


CONVERSATION: list[Item] = [user("first"), call("c1"), output("c1"), Message(role="assistant", content="ok"),
                            user("second")]


@pytest.mark.parametrize("truncation", ["disabled", "auto", None])
def test_a_conversation_that_fits_goes_as_it_is(truncation: Truncation | None) -> None:
    assert fit_conversation(CONVERSATION, truncation=truncation, context_window=50, count=ten) == CONVERSATION
    assert fit_conversation(CONVERSATION, truncation=truncation, context_window=None, count=ten) == CONVERSATION


@pytest.mark.parametrize("truncation", ["disabled", None])
def test_without_auto_an_oversized_input_is_a_400(truncation: Truncation | None) -> None:
    with pytest.raises(ContextTooLong) as caught:
        fit_conversation(CONVERSATION, truncation=truncation, context_window=49, count=ten)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "input")
    assert "about 50 tokens" in error.message and "49" in error.message


def test_auto_drops_the_oldest_and_a_call_with_its_output() -> None:
    assert fit_conversation(CONVERSATION, truncation="auto", context_window=40, count=ten) == CONVERSATION[1:]
    # Dropping the call alone would do for 30 tokens, but never without its output.
    assert fit_conversation(CONVERSATION, truncation="auto", context_window=30, count=ten) == CONVERSATION[3:]


def test_fixed_tokens_count_against_the_window() -> None:
    assert fit_conversation(CONVERSATION, truncation="auto", context_window=60, fixed_tokens=20,
                            count=ten) == CONVERSATION[1:]


def test_reasoning_goes_with_the_item_after_it() -> None:
    reasoning = Reasoning(summary=[SummaryText(text="think")])
    items: list[Item] = [reasoning, call("c1"), output("c1"), user("next")]
    assert fit_conversation(items, truncation="auto", context_window=30, count=ten) == [user("next")]


def test_system_and_developer_messages_are_never_dropped() -> None:
    system = Message(role="system", content="rules")
    developer = Message(role="developer", content="more rules")
    items: list[Item] = [system, user("old"), developer, user("new")]
    assert fit_conversation(items, truncation="auto", context_window=30, count=ten) == [system, developer,
                                                                                        user("new")]


def test_the_newest_unit_is_kept_even_when_its_call_is_older() -> None:
    items: list[Item] = [call("c1"), user("aside"), output("c1")]
    assert fit_conversation(items, truncation="auto", context_window=20, count=ten) == [call("c1"), output("c1")]


def test_opaque_calls_keep_their_outputs() -> None:
    patch = OpaqueItem({"type": "custom_tool_call", "call_id": "p1", "name": "apply_patch", "input": "x"})
    done = OpaqueItem({"type": "custom_tool_call_output", "call_id": "p1", "output": "ok"})
    items: list[Item] = [patch, user("mid"), done, user("last")]
    assert fit_conversation(items, truncation="auto", context_window=20, count=ten) == [user("mid"), user("last")]


def test_auto_refuses_what_cannot_fit_even_truncated() -> None:
    system = Message(role="system", content="rules")
    with pytest.raises(ContextTooLong) as caught:
        fit_conversation([system, user("old"), user("new")], truncation="auto", context_window=15, count=ten)
    assert caught.value.param == "input" and "even with older items dropped" in caught.value.message
    assert "about 20 tokens remain" in caught.value.message


def test_the_estimate() -> None:
    assert [text_tokens(text) for text in ("", "abcd", "abcde", "éé")] == [0, 1, 2, 1]
    assert item_tokens(user("x" * 40)) == ITEM_TOKENS + 10
    parts = Message(role="user", content=[InputText(text="abcdefgh"), InputImage(image_url="https://x/y.png")])
    assert item_tokens(parts) == ITEM_TOKENS + 2 + MEDIA_TOKENS
    assert item_tokens(Message(role="assistant", content=[OutputText(text="abcd")])) == ITEM_TOKENS + 1
    assert item_tokens(FunctionCall(call_id="c", name="abcd", arguments='{"a":1}')) == ITEM_TOKENS + 1 + 2
    tool = FunctionTool(name="lookup", parameters={"type": "object"})
    with_everything = estimate_tokens([user("abcd")], instructions="abcdefgh", tools=[tool])
    assert with_everything > estimate_tokens([user("abcd")], instructions="abcdefgh") == ITEM_TOKENS + 1 + 2


# -- the rule's promises, for any conversation --------------------------------------------------

@st.composite
def conversations(draw: st.DrawFn) -> list[Item]:
    """Messages, reasoning, and calls whose outputs come later, interleaved."""
    items: list[Item] = []
    pending: list[str] = []
    for step in range(draw(st.integers(min_value=1, max_value=14))):
        kind = draw(st.sampled_from(["user", "assistant", "system", "reasoning", "call", "output"]))
        if kind == "call":
            pending.append(f"c{step}")
            items.append(call(f"c{step}"))
        elif kind == "output" and pending:
            items.append(output(pending.pop(draw(st.integers(min_value=0, max_value=len(pending) - 1)))))
        elif kind == "reasoning":
            items.append(Reasoning(summary=[SummaryText(text=f"r{step}")]))
        elif kind in ("user", "assistant", "system"):
            items.append(Message(role=kind, content=f"m{step}"))  # type: ignore[arg-type]
    return items or [user("only")]


@settings(max_examples=300, deadline=None)
@given(conversations(), st.integers(min_value=0, max_value=160))
def test_auto_truncation_keeps_its_promises(items: list[Item], window: int) -> None:
    try:
        kept = fit_conversation(items, truncation="auto", context_window=window, count=ten)
    except ContextTooLong:
        return
    assert len(kept) * TEN <= window
    positions = [next(i for i, item in enumerate(items) if item is k) for k in kept]
    assert positions == sorted(positions), "order is kept"
    pinned = [item for item in items if isinstance(item, Message) and item.role == "system"]
    assert all(any(item is k for k in kept) for item in pinned), "system messages stay"
    assert any(item is items[-1] for item in kept) or items[-1] in pinned, "the newest item stays"
    calls = {item.call_id for item in items if isinstance(item, FunctionCall)}
    kept_calls = {item.call_id for item in kept if isinstance(item, FunctionCall)}
    kept_outputs = {item.call_id for item in kept if isinstance(item, FunctionCallOutput)}
    answered = {item.call_id for item in items if isinstance(item, FunctionCallOutput)}
    assert kept_outputs & calls == kept_calls & answered, "a call and its output go together"
