"""Deterministic embeddings: hashed bags of words, L2-normalised.

Retrieval tests (pgvector, long-term memory) need vectors where texts sharing words are closer
than texts that share none, and the same text always gives the same vector across processes —
so hashing is done with blake2b, never Python's salted ``hash()``. Common stop words are dropped
so that "the" and "is" do not make unrelated sentences look alike.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct

_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    "a an and are as at be but by do does for from has have how i in is it its me my of on or "
    "our so that the their them then there these this to was we were what when where which who "
    "why will with you your".split()
)


def _tokens(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]
    # A crude plural fold so "cats" and "cat" land together.
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big")
    return value % dimensions, 1.0 if (value >> 63) & 1 else -1.0


def embed_text(text: str, dimensions: int) -> list[float]:
    """A unit vector for ``text``: word features dominate, adjacent-word pairs add some order."""
    vector = [0.0] * dimensions
    words = _tokens(text)
    features = [(w, 1.0) for w in words] + [
        (f"{a} {b}", 0.5) for a, b in zip(words, words[1:], strict=False)
    ]
    if not features:
        features = [("\x00empty", 1.0)]
    for feature, weight in features:
        index, sign = _bucket(feature, dimensions)
        vector[index] += sign * weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # features cancelled out exactly; fall back to a fixed direction
        index, sign = _bucket("\x00empty", dimensions)
        vector[index], norm = sign, 1.0
    return [v / norm for v in vector]


def encode_base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64`` (little-endian float32), the SDK's default request."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
