"""Stable digests: the sha256 of text or bytes, whole or cut to a length."""

from __future__ import annotations

import hashlib


def sha256_hex(data: str | bytes | memoryview) -> str:
    """The sha256 of ``data`` (text is encoded as UTF-8), as 64 hex digits."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def short_digest(data: str | bytes, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``data``: a stable key, not a seal."""
    return sha256_hex(data)[:length]
