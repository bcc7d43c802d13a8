"""What of an upstream's error may reach a client: its message with the key masked, and only
identifier-shaped codes and params.

An upstream may echo its own API key anywhere in an error (message, ``code``, ``param``, an
in-stream error event). Messages are free text, so the key (and its tail, which some platforms
echo) is masked in them. ``code`` and ``param`` are meant to be identifiers
(``context_length_exceeded``, ``messages[0].content``): anything else, anything holding the key,
and anything with a long unbroken alphanumeric run (what a key looks like, and no code does) is
dropped rather than relayed.
"""

from __future__ import annotations

import re

__all__ = ["redact", "redact_bytes", "safe_code", "safe_param"]

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]\-]{0,127}")
_KEYISH = re.compile(r"[A-Za-z0-9]{16,}")  # a run no real code or param has, every key does


def redact(text: str, secret: str | None) -> str:
    """``text`` with the upstream key (and its tail, as some platforms echo) masked."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
        if len(secret) > 8:
            text = text.replace(secret[-8:], "***")
    return text


def redact_bytes(data: bytes, secret: str | None) -> bytes:
    """``redact`` for relayed bytes (answers, stream events): a no-op unless the key is there."""
    if not secret or len(secret) < 4:
        return data
    raw = secret.encode()
    tail = raw[-8:] if len(raw) > 8 else raw
    if tail not in data:  # the whole key contains its tail: one search on the common path
        return data
    return data.replace(raw, b"***").replace(tail, b"***")


def _safe(value: object, pattern: re.Pattern[str], secret: str | None) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value)
    if pattern.fullmatch(text) is None or _KEYISH.search(text) is not None:
        return None
    if redact(text, secret) != text:
        return None
    return text


def safe_code(value: object, secret: str | None) -> str | None:
    """An upstream error ``code`` fit to relay, else None."""
    return _safe(value, _CODE, secret)


def safe_param(value: object, secret: str | None) -> str | None:
    """An upstream error ``param`` fit to relay, else None."""
    return _safe(value, _PARAM, secret)
