"""A simulated platform's prompt cache: per (region, model), whole-message prefixes kept ``cache_ttl_s``.

A chat request's messages are remembered (as a hash of each prefix's JSON) when it is
served; a later request whose first k messages equal a remembered prompt, seen at most the
offer's ``cache_ttl_s`` ago, has those k messages' tokens as
``usage.prompt_tokens_details.cached_tokens`` (the way DeepSeek and Ark report a prefix hit).
A hit refreshes the entry, as a platform's cache keeps what is used. Time is the sim's clock
(seconds), so a virtual clock moves the TTL too.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable

import orjson

from suanli.config import Offer
from suanli.providers.tokenizer import count_prompt_tokens

__all__ = ["PrefixCache"]

_MAX_ENTRIES = 50_000  # prompts remembered per sim, oldest out


def _digest(model: str, messages: list) -> bytes:
    return hashlib.blake2b(model.encode() + b"\x1f" + orjson.dumps(messages), digest_size=16).digest()


class PrefixCache:
    """Remembered prompts of one sim: (model, prefix hash) -> when last seen (sim seconds)."""

    def __init__(self, now_s: Callable[[], float]) -> None:
        self.now_s = now_s
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self.hits = 0
        self.cached_tokens = 0

    def lookup(self, offer: Offer, messages: list) -> int:
        """Reference tokens of the longest remembered prefix of ``messages`` (0: a miss); remembers them."""
        now = self.now_s()
        model = offer.upstream_name
        hit = 0
        for k in range(len(messages), 0, -1):
            key = _digest(model, messages[:k])
            seen = self._seen.get(key)
            if seen is not None and now - seen <= offer.cache_ttl_s:
                hit = k
                self._remember(key, now)
                break
        self._remember(_digest(model, messages), now)
        if not hit:
            return 0
        tokens = count_prompt_tokens("chat/completions", {"messages": messages[:hit]})
        self.hits += 1
        return tokens

    def model_tokens(self, offer: Offer, reference_tokens: int, prompt_tokens: int) -> int:
        """A hit's reference tokens in the model's tokens, never more than the prompt."""
        cached = math.ceil(round(reference_tokens * offer.token_ratio, 6))
        cached = min(cached, prompt_tokens)
        self.cached_tokens += cached
        return cached

    def _remember(self, key: bytes, now: float) -> None:
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > _MAX_ENTRIES:
            self._seen.popitem(last=False)
