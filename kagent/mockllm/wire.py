"""Small helpers the three wire formats share: ids, SSE framing, and splitting text into deltas.

Streams are cut into several pieces on purpose so that clients really exercise their delta
accumulation (text and partial tool-call JSON), as they must with a real provider.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

_PIECE = re.compile(r"\S+\s*|\s+")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def text_pieces(text: str) -> list[str]:
    """Word-sized pieces (whitespace kept), so joining them gives back ``text`` exactly."""
    return _PIECE.findall(text) or [text]


def json_pieces(encoded: str, parts: int = 3) -> list[str]:
    """Split a JSON string into a few arbitrary slices, like providers stream tool arguments."""
    if len(encoded) < parts * 2:
        return [encoded]
    size = -(-len(encoded) // parts)
    return [encoded[i : i + size] for i in range(0, len(encoded), size)]


def sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    """One server-sent event; ``data`` dicts are JSON-encoded on a single line."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


class BadRequest(ValueError):
    """A request the real provider would reject with 400, answered in its own error shape."""


def retry_headers(retry_after: float | None) -> dict[str, str]:
    """``retry-after-ms`` lets SDKs retry within milliseconds; ``retry-after`` is the standard."""
    if retry_after is None:
        return {}
    return {
        "retry-after": str(max(0, round(retry_after))),
        "retry-after-ms": str(int(retry_after * 1000)),
    }
