"""Reference token counts: the DeepSeek V3/V4 tokenizer, offline, loaded lazily once.

DESIGN.md measures every request in *reference* tokens (DeepSeek V3/V4); an offer's
``token_ratio`` turns them into the serving model's tokens. The tokenizer itself is
``deepseek_tokenizer.json`` as shipped inside the litellm wheel (found with
``importlib.util.find_spec``, so litellm is never imported). Its byte-level BPE is
loaded into tiktoken's Rust core rather than HuggingFace ``tokenizers``: same token
ids (the merge order equals the id order, and the pre-tokenizer's three ``Split``
stages are folded into one regex below), about 5x faster per call.

If the file is missing, counts fall back to a byte-based estimate and a warning is
logged once; ``tokenizer_name()`` says which one is in use.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

import orjson

__all__ = [
    "count_message_tokens",
    "count_prompt_tokens",
    "count_tokens",
    "load_tokenizer",
    "tokenizer_name",
]

log = logging.getLogger(__name__)

# Chat-template overhead of the reference model: role markers around each message and
# the assistant prefix that primes the answer.
PER_MESSAGE_TOKENS = 3
PER_REPLY_TOKENS = 3
# A non-text content part (image, audio, file) has no text to count: a flat prior.
NON_TEXT_PART_TOKENS = 85

_CJK = "\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff"
_LETTER = rf"[\p{{L}}\p{{M}}&&[^{_CJK}]]"
# DeepSeek's pre-tokenizer is Split(numbers) -> Split(CJK runs) -> Split(words, ...), each
# "Isolated". One left-to-right regex gives the same pieces when the word-level rules
# never cross a number or CJK run (letters exclude CJK, the trailing-space rule treats
# them like the end of text), and when unmatched gaps become pieces (the last branch).
_PATTERN = (
    r"\p{N}{1,3}"
    rf"|[{_CJK}]+"
    r"|[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"
    rf"|[^\r\n\p{{L}}\p{{P}}\p{{S}}]?{_LETTER}+"
    rf"| ?[\p{{P}}\p{{S}}&&[^{_CJK}]]+[\r\n]*"
    r"|\s*[\r\n]+"
    rf"|\s+(?![^\s\p{{N}}{_CJK}])"
    r"|\s+"
    rf"|(?:[^\s\p{{L}}\p{{M}}\p{{N}}\p{{P}}\p{{S}}](?!{_LETTER}))+"
)

_lock = threading.Lock()
_counter: Callable[[str], int] | None = None
_name = "unloaded"


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level alphabet: the printable character standing for each byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


def _deepseek_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "litellm_core_utils" / "tokenizers" / "deepseek_tokenizer.json"
        if path.is_file():
            return path
    return None


def _read_vocab(data: bytes) -> dict[str, int]:
    """``model.vocab`` of a tokenizer.json, parsed without its merges table when it can be.

    Counting needs the ranks only (the merge order equals the rank order): parsing just the
    vocab object skips 128k merge strings, a third of the load. The object is cut out of the
    compact JSON by its keys (a string cannot contain an unescaped quote, so the first
    ``},"merges":`` after ``"vocab":`` ends it); any other layout parses the whole file.
    """
    start = data.find(b'"vocab":{')
    end = data.find(b'},"merges":', start)
    if start >= 0 and end >= 0:
        try:
            vocab = orjson.loads(data[start + len(b'"vocab":') : end + 1])
        except orjson.JSONDecodeError:
            vocab = None
        if isinstance(vocab, dict):
            return vocab
    return orjson.loads(data)["model"]["vocab"]


def _load_deepseek(path: Path) -> Callable[[str], int]:
    import tiktoken

    vocab = _read_vocab(path.read_bytes())
    # Byte-level alphabet -> the byte as a latin-1 character, in C (str.translate) rather than
    # a generator per token: half the load time. Characters outside the alphabet map to one
    # latin-1 cannot encode, so tokens that are not byte-level strings are skipped as before.
    table = dict.fromkeys(range(256), "\uffff")
    table.update({ord(char): chr(byte) for char, byte in _byte_decoder().items()})
    ranks: dict[bytes, int] = {}
    for token, rank in vocab.items():
        try:
            ranks[token.translate(table).encode("latin-1")] = rank
        except UnicodeEncodeError:  # the three special tokens are not byte-level strings
            continue
    encoding = tiktoken.Encoding("deepseek-v3", pat_str=_PATTERN, mergeable_ranks=ranks, special_tokens={})
    # The Encoding keeps the Python dict it was built from (~20 MB for 128k tokens), though
    # counting only uses the Rust core's copy: drop it, and hand the freed heap back.
    encoding._mergeable_ranks = {}
    del vocab, ranks
    _trim_heap()
    encode = encoding.encode_ordinary
    return lambda text: len(encode(text))


def _trim_heap() -> None:
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, just not returned
        pass


def _approximate(text: str) -> int:
    # About 3 UTF-8 bytes per token across English and Chinese: a last resort only.
    return math.ceil(len(text.encode("utf-8", "replace")) / 3)


def _load() -> Callable[[str], int]:
    global _counter, _name
    with _lock:
        if _counter is None:
            path = _deepseek_file()
            if path is None:
                log.warning("deepseek_tokenizer.json not found (is litellm installed?): estimating tokens")
                _counter, _name = _approximate, "approximate"
            else:
                _counter, _name = _load_deepseek(path), "deepseek-v3"
        return _counter


def load_tokenizer() -> str:
    """Load the reference tokenizer now (it loads on first use otherwise); returns its name."""
    _load()
    return _name


def tokenizer_name() -> str:
    """``deepseek-v3``, or ``approximate`` when the tokenizer file is unavailable."""
    return load_tokenizer()


def count_tokens(text: str) -> int:
    """Reference tokens of ``text`` (special-token text counts as plain text)."""
    if not text:
        return 0
    return (_counter or _load())(text)


def _count_content(content: object) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += count_tokens(part)
        elif isinstance(part, dict):
            text = part.get("text")
            total += count_tokens(text) if isinstance(text, str) else NON_TEXT_PART_TOKENS
    return total


def _count_tool_calls(tool_calls: object) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                value = function.get(key)
                if isinstance(value, str):
                    total += count_tokens(value)
    return total


def count_message_tokens(messages: list) -> int:
    """Reference tokens of a chat prompt: contents, names, tool calls, template overhead."""
    total = PER_REPLY_TOKENS
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += PER_MESSAGE_TOKENS + _count_content(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += count_tokens(name)
        total += _count_tool_calls(message.get("tool_calls"))
    return total


def _count_inputs(value: object) -> int:
    """A completions ``prompt`` or embeddings ``input``: str, [str], [int] or [[int]]."""
    if isinstance(value, str):
        return count_tokens(value)
    if not isinstance(value, list):
        return 0
    if value and all(isinstance(item, int) for item in value):
        return len(value)  # already token ids
    return sum(_count_inputs(item) for item in value)


def count_prompt_tokens(endpoint: str, body: dict) -> int:
    """Reference input tokens of a request body for ``chat/completions``, ``completions``
    or ``embeddings``; fields of the wrong type count as nothing (validation is elsewhere)."""
    if endpoint == "chat/completions":
        messages = body.get("messages")
        total = count_message_tokens(messages) if isinstance(messages, list) else 0
        tools = body.get("tools")
        if isinstance(tools, list) and tools:
            # Tool schemas are rendered into the system prompt upstream.
            total += count_tokens(orjson.dumps(tools).decode())
        return total
    if endpoint == "completions":
        return _count_inputs(body.get("prompt"))
    if endpoint == "embeddings":
        return _count_inputs(body.get("input"))
    return 0
