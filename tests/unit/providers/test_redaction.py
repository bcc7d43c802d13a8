"""What of an upstream error may be relayed: identifier-shaped codes and params without the key."""

from __future__ import annotations

import pytest

from suanli.providers.redaction import redact, redact_bytes, safe_code, safe_param

KEY = "sk-live-0123456789abcdefXYZ"


@pytest.mark.parametrize(
    "code", ["context_length_exceeded", "model_not_found", "invalid_api_key", "rate.limit-1"]
)
def test_ordinary_codes_pass(code: str):
    assert safe_code(code, KEY) == code


@pytest.mark.parametrize(
    "code",
    [KEY, f"bad_{KEY}", KEY[-8:], "a1b2c3d4e5f6a7b8c9d0", "has space", "", None, 401, True, {}, "x" * 65],
)
def test_keys_and_odd_codes_are_dropped(code: object):
    assert safe_code(code, KEY) is None


def test_params_keep_paths_and_drop_keys():
    assert safe_param("messages[0].content", KEY) == "messages[0].content"
    assert safe_param(KEY, KEY) is None
    assert safe_param("sk-otherkeyABCDEFGHIJKLMNOP", None) is None  # key-shaped even when unknown


def test_messages_and_bytes_are_masked():
    assert redact(f"bad key {KEY} (…{KEY[-8:]})", KEY) == "bad key *** (…***)"
    assert redact_bytes(f'{{"content":"{KEY}"}}'.encode(), KEY) == b'{"content":"***"}'
    assert redact_bytes(b"nothing here", KEY) == b"nothing here"
