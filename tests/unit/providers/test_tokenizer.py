"""The reference tokenizer: real DeepSeek counts, cheap per call, loaded lazily."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from suanli.providers import tokenizer
from suanli.providers.tokenizer import (
    NON_TEXT_PART_TOKENS,
    PER_MESSAGE_TOKENS,
    PER_REPLY_TOKENS,
    count_message_tokens,
    count_prompt_tokens,
    count_tokens,
    load_tokenizer,
    tokenizer_name,
)

_ZH = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"
_POOL = [
    lambda rng: rng.choice(_ZH),
    lambda rng: rng.choice("abcdefgXYZ .,!?123\n\t"),
    lambda rng: rng.choice("    。，！？：；“”（）《》、"),
    lambda rng: chr(rng.randint(0x20, 0x3000)),
    # kana marks, accents, emoji, format/control/private-use characters, ideographic space
    lambda rng: rng.choice(["ー・゙", "é", "😀", "\u200b", "\u206d", "\x01", "\ue000", "\u0301", "\u3000"]),
]


def _samples() -> list[str]:
    rng = random.Random(7)
    texts = ["".join(rng.choice(_POOL)(rng) for _ in range(rng.randint(1, 300))) for _ in range(300)]
    root = Path(__file__).resolve().parents[3]
    for name in ("README.md", "config/catalog.yaml", "providers/tokenizer.py"):
        path = root / name
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
    return texts


def test_reference_tokenizer_is_deepseek() -> None:
    assert load_tokenizer() == "deepseek-v3"
    assert tokenizer_name() == "deepseek-v3"


def test_counts_equal_huggingface_deepseek_tokenizer() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    path = tokenizer._deepseek_file()
    assert path is not None
    reference = tokenizers.Tokenizer.from_file(str(path))
    for text in _samples():
        expected = len(reference.encode(text, add_special_tokens=False).ids)
        assert count_tokens(text) == expected, text[:80]


def test_known_counts() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello world") == 2
    assert count_tokens(" the") == 1
    assert count_tokens("中国") == 1


def test_special_token_text_counts_as_plain_text() -> None:
    assert count_tokens("<｜begin▁of▁sentence｜>") > 1


def test_message_tokens_add_template_overhead() -> None:
    text = "请把这段话翻译成英文：算力券。"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    expected = PER_REPLY_TOKENS + 2 * PER_MESSAGE_TOKENS + count_tokens("be brief") + count_tokens(text)
    assert count_message_tokens(messages) == expected


def test_content_parts_count_text_and_a_flat_prior_for_images() -> None:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    got = count_message_tokens([{"role": "user", "content": parts}])
    assert got == PER_REPLY_TOKENS + PER_MESSAGE_TOKENS + count_tokens("describe") + NON_TEXT_PART_TOKENS


def test_tool_calls_and_names_are_counted() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Wuhan"}'}}
    messages = [{"role": "assistant", "content": None, "name": "bot", "tool_calls": [call]}]
    extra = count_tokens("bot") + count_tokens("lookup") + count_tokens('{"city": "Wuhan"}')
    assert count_message_tokens(messages) == PER_REPLY_TOKENS + PER_MESSAGE_TOKENS + extra


def test_prompt_tokens_per_endpoint() -> None:
    messages = [{"role": "user", "content": "hello there"}]
    assert count_prompt_tokens("chat/completions", {"messages": messages}) == count_message_tokens(messages)
    assert count_prompt_tokens("completions", {"prompt": "hello there"}) == count_tokens("hello there")
    both = count_tokens("a b") + count_tokens("c")
    assert count_prompt_tokens("completions", {"prompt": ["a b", "c"]}) == both
    assert count_prompt_tokens("embeddings", {"input": [1, 2, 3]}) == 3
    assert count_prompt_tokens("embeddings", {"input": [[1, 2], [3]]}) == 3
    assert count_prompt_tokens("embeddings", {"input": "x y"}) == count_tokens("x y")


def test_tools_add_their_schema_tokens() -> None:
    messages = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    plain = count_prompt_tokens("chat/completions", {"messages": messages})
    assert count_prompt_tokens("chat/completions", {"messages": messages, "tools": tools}) > plain


def test_wrong_types_count_as_nothing() -> None:
    assert count_prompt_tokens("chat/completions", {"messages": "nope"}) == 0
    assert count_prompt_tokens("completions", {"prompt": 5}) == 0
    assert count_prompt_tokens("files", {}) == 0
    assert count_message_tokens(["not a dict"]) == PER_REPLY_TOKENS


def test_import_loads_nothing() -> None:
    code = (
        "import sys, providers.tokenizer as t\n"
        "assert t._counter is None\n"
        "assert 'tiktoken' not in sys.modules and 'litellm' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])


def test_vocab_read_without_merges_is_the_whole_files_vocab() -> None:
    import json

    import orjson

    path = tokenizer._deepseek_file()
    assert path is not None
    data = path.read_bytes()
    full = orjson.loads(data)["model"]["vocab"]
    assert tokenizer._read_vocab(data) == full
    # another layout (indented, keys reordered): the whole file is parsed instead
    small = {"model": {"merges": ["a b"], "vocab": {"a": 0, "},\"merges\":": 1, "ab": 2}}}
    for text in (json.dumps(small, indent=2), json.dumps(small, separators=(",", ":"))):
        assert tokenizer._read_vocab(text.encode()) == small["model"]["vocab"]
