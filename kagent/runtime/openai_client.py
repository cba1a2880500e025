"""The official OpenAI client, minus a per-request cost that buys nothing for chat completions.

Before sending, the SDK walks every request body against its parameter types (unions of
TypedDicts, for each message and each part of it) to rename aliased fields and format dates and
files. Chat-completion parameters have no aliases and no formats, so the walk never changes a
body — yet it is the largest single cost of a model call from the runtime: about 0.2 ms of CPU
per message of history, 4 ms for a conversation of 20 messages, more than the rest of the
SDK's work together.

:class:`LeanAsyncOpenAI` hands ``messages`` and ``tools`` to the SDK in ``extra_body``, the
SDK's documented way to send body fields as they are; it merges them into the same keys of the
same JSON body. It does so only while the walk is provably a no-op: the installed SDK's
chat-completion types carry no alias or format (checked once, :func:`transform_is_identity`),
and the lists hold plain JSON values only. Otherwise the SDK does its usual work.
"""

from __future__ import annotations

import functools
import typing
from functools import cached_property
from typing import Any

import typing_extensions
from openai import AsyncOpenAI
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.types.chat import completion_create_params

PASSED_AS_IS = ("messages", "tools")
"""The body fields that grow with the conversation and the agent's tools."""

_JSON_SCALARS = (str, int, float, bool, type(None))


class LeanAsyncOpenAI(AsyncOpenAI):
    """``AsyncOpenAI`` whose ``chat.completions.create`` skips the no-op body walk."""

    @cached_property
    def chat(self) -> AsyncChat:
        return _LeanChat(self)


class _LeanChat(AsyncChat):
    @cached_property
    def completions(self) -> AsyncCompletions:
        return _LeanCompletions(self._client)


class _LeanCompletions(AsyncCompletions):
    async def create(self, **params: Any) -> Any:  # type: ignore[override]
        return await super().create(**untransformed(params))


def untransformed(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the plain-JSON ``messages`` and ``tools`` moved into ``extra_body``."""
    if not transform_is_identity():
        return params
    lean = dict(params)
    extra = dict(params.get("extra_body") or {})
    for field in PASSED_AS_IS:
        value = params.get(field)
        if isinstance(value, list) and value and field not in extra and is_plain_json(value):
            extra[field] = value
            lean[field] = []  # still passed (``messages`` is required); extra_body's value wins
    lean["extra_body"] = extra or params.get("extra_body")
    return lean


def is_plain_json(value: object) -> bool:
    """True for dicts with string keys, lists and JSON scalars all the way down."""
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list):
        return all(is_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_json(v) for k, v in value.items())
    return False


@functools.cache
def transform_is_identity() -> bool:
    """True when no type reachable from the chat-completion parameters asks the SDK to rename
    or format a field — the only changes its walk makes to dicts, lists and scalars."""
    return not any(
        _has_property_info(typ, set())
        for typ in (
            completion_create_params.CompletionCreateParamsStreaming,
            completion_create_params.CompletionCreateParamsNonStreaming,
        )
    )


def _has_property_info(typ: Any, seen: set[int]) -> bool:
    if id(typ) in seen:
        return False
    seen.add(id(typ))
    if typing.get_origin(typ) is typing.Annotated:
        for meta in typ.__metadata__:
            if getattr(meta, "alias", None) is not None or getattr(meta, "format", None) is not None:
                return True
    if typing_extensions.is_typeddict(typ):
        hints = typing_extensions.get_type_hints(typ, include_extras=True)
        return any(_has_property_info(hint, seen) for hint in hints.values())
    return any(_has_property_info(arg, seen) for arg in typing.get_args(typ))
