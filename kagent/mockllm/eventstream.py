"""AWS binary event-stream encoding (``application/vnd.amazon.eventstream``).

Bedrock's ``ConverseStream`` answers with these frames, and botocore refuses anything whose
lengths or CRCs are off, so the layout is followed to the byte::

    total length (u32) | headers length (u32) | prelude CRC32 (u32)
    headers: name length (u8) | name | value type (u8, 7 = string) | value length (u16) | value
    payload
    message CRC32 (u32, over everything before it)
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        encoded_name, encoded_value = name.encode(), value.encode()
        out += struct.pack(">B", len(encoded_name)) + encoded_name
        out += struct.pack(">BH", _STRING, len(encoded_value)) + encoded_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream frame."""
    header_bytes = _headers(headers)
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_bytes))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    body = prelude + header_bytes + payload
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """A normal event: botocore dispatches on ``:event-type`` and parses the JSON payload."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, json.dumps(payload, separators=(",", ":")).encode())
