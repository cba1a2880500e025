"""History rules shared by every session backend, and the in-memory backend's TTL and trimming
(with a fake clock)."""

from __future__ import annotations

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from kagent.runtime.memory.base import (
    SUMMARY_HEADING,
    Session,
    close_pending_calls,
    decode_message,
    encode_message,
    pending_tool_calls,
    usable_history,
)
from kagent.runtime.memory.compression import split_point, transcript
from kagent.runtime.memory.inmemory import InMemorySessionStore


def user(text: str) -> ModelRequest:
    return ModelRequest(parts=[UserPromptPart(content=text)])


def reply(text: str) -> ModelResponse:
    return ModelResponse(parts=[TextPart(content=text)])


def call(name: str, call_id: str, **args: object) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(tool_name=name, args=args, tool_call_id=call_id)])


def result(name: str, call_id: str, content: str) -> ModelRequest:
    return ModelRequest(parts=[ToolReturnPart(tool_name=name, content=content,
                                              tool_call_id=call_id)])


def show(messages: list[ModelMessage]) -> list[str]:
    """Messages as ``kind:content`` strings (constructed messages differ in timestamps)."""
    out = []
    for message in messages:
        for part in message.parts:
            content = getattr(part, "content", None)
            if content is None:
                content = getattr(part, "args", None)
            out.append(f"{part.part_kind}:{content}")
    return out


TOOL_TURN: list[ModelMessage] = [
    user("convert 5 EUR"), call("convert", "c1", amount=5), result("convert", "c1", "10 USD"),
    reply("10 USD"),
]


def test_messages_survive_encoding() -> None:
    for message in TOOL_TURN:
        assert decode_message(encode_message(message)) == message


def test_usable_history_starts_at_a_user_turn() -> None:
    trimmed = Session(TOOL_TURN[2:] + [user("next"), reply("ok")])
    assert show(usable_history(trimmed)) == ["user-prompt:next", "text:ok"]
    assert usable_history(Session(TOOL_TURN)) == TOOL_TURN


def test_summary_goes_in_front_as_a_system_prompt() -> None:
    history = usable_history(Session([user("hi"), reply("hello")], summary="Ada likes tea."))
    first = history[0]
    assert isinstance(first, ModelRequest)
    assert isinstance(first.parts[0], SystemPromptPart)
    assert show([first]) == [f"system-prompt:{SUMMARY_HEADING}\nAda likes tea.", "user-prompt:hi"]
    assert show(history[1:]) == ["text:hello"]
    alone = usable_history(Session([], summary="Only a summary."))
    assert len(alone) == 1 and isinstance(alone[0].parts[0], SystemPromptPart)


def test_pending_tool_calls_and_closing_them() -> None:
    paused = [user("deploy"), call("ask", "q1", question="where?")]
    assert [c.tool_call_id for c in pending_tool_calls(paused)] == ["q1"]
    assert pending_tool_calls(TOOL_TURN) == []
    closed = close_pending_calls(paused, "no answer")
    assert pending_tool_calls(closed) == []
    assert closed[-1].parts[0].content == "no answer"
    assert close_pending_calls(TOOL_TURN, "x") == TOOL_TURN


def test_split_point_keeps_recent_turns_whole() -> None:
    messages = [user("a"), reply("1"), *TOOL_TURN, user("b"), reply("2")]
    # keep 2: the last turn (user b, reply 2) stays.
    assert split_point(messages, 2) == 6
    # keep 3: a cut at index 5 would split the tool turn; the next turn start is used.
    assert split_point(messages, 3) == 6
    # keep 6: the whole tool turn fits.
    assert split_point(messages, 6) == 2
    # keep 1: fewer than the last turn; the last turn is kept whole anyway.
    assert split_point(messages, 1) == 6


def test_transcript_reads_like_a_conversation() -> None:
    text = transcript(TOOL_TURN, previous_summary="Earlier: hello.")
    assert text.splitlines() == [
        "Summary of what came before:",
        "Earlier: hello.",
        "",
        "User: convert 5 EUR",
        'Assistant called tool convert with {"amount": 5}',
        "Tool convert returned: 10 USD",
        "Assistant: 10 USD",
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_in_memory_store_trims_and_expires() -> None:
    clock = Clock()
    store = InMemorySessionStore(namespace="t", ttl=10, max_history=3, clock=clock)
    assert await store.append("c", [user("1"), reply("1")]) == 2
    assert await store.append("c", [user("2"), reply("2")]) == 3
    assert show((await store.load("c")).messages) == ["text:1", "user-prompt:2", "text:2"]
    clock.now += 9
    await store.append("c", [user("3")])  # restarts the TTL
    clock.now += 9
    assert len((await store.load("c")).messages) == 3
    clock.now += 2
    assert (await store.load("c")).messages == []
    assert len(store) == 0


async def test_in_memory_store_without_ttl_keeps_forever_and_compacts() -> None:
    clock = Clock()
    store = InMemorySessionStore(namespace="t", ttl=0, max_history=10, clock=clock)
    await store.append("c", [user("1"), reply("1"), user("2"), reply("2")])
    clock.now += 10**9
    await store.compact("c", "one happened", 2)
    session = await store.load("c")
    assert session.summary == "one happened"
    assert show(session.messages) == ["user-prompt:2", "text:2"]
