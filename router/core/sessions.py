"""Cache affinity: which conversation a request continues, and what its prompt cache is worth where.

A platform keeps a conversation's prompt in cache for the offer's ``cache_ttl_s``; a follow-up
sent there pays ``price.cached_input`` for the repeated part. A conversation is recognised,
first match wins, by ``"suanli": {"session": ...}`` in the body, the ``X-Suanli-Session``
header, the OpenAI ``user`` field, or, for a chat follow-up, a hash of the prompt it repeats
(its messages before its last assistant turn: the previous request's whole prompt). Named
sessions are kept per key, so two tenants' ``user`` values never meet.

``SessionBook`` remembers, per session, the region and model that served its last request,
when it started (the Router's clock) and its prompt's model tokens. ``prefer_cached`` then
rescores the chooser's options: the one at that region and model, within the TTL, is worth
the cached price on the repeated tokens, so the follow-up stays when that is cheapest and
moves when another region is cheaper still.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from suanli.optimizer import Ask, Option

__all__ = ["SessionBook", "Visit", "prefer_cached", "session_keys"]

_MAX_SESSIONS = 100_000


@dataclass(frozen=True, slots=True)
class Visit:
    """A session's last served request: where, which model, its start (epoch s), its prompt's model tokens."""

    region: str
    model: str
    start_s: float
    prompt_tokens: float


def _digest(messages: list) -> str:
    return "prefix:" + hashlib.blake2b(orjson.dumps(messages), digest_size=12).hexdigest()


def session_keys(
    endpoint: str, body: dict, *, named: str | None, header: str | None, key_id: str | None
) -> tuple[str | None, str | None]:
    """``(the session this request continues, the session its follow-ups will continue)``.

    A named session (body, header, ``user``) is both. A chat request without one continues
    the hash of the prompt it repeats, if any, and registers the hash of its own prompt.
    """
    user = body.get("user") if isinstance(body.get("user"), str) and body.get("user") else None
    name = named or header or user
    if name:
        scoped = f"{key_id or '-'}:{name}"
        return scoped, scoped
    if endpoint != "chat/completions":
        return None, None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, None
    scope = f"{key_id or '-'}:"
    last_assistant = None
    for i in range(len(messages) - 1, -1, -1):
        item = messages[i]
        if isinstance(item, dict) and item.get("role") == "assistant":
            last_assistant = i
            break
    previous = scope + _digest(messages[:last_assistant]) if last_assistant else None
    return previous, scope + _digest(messages)


class SessionBook:
    """Session -> its last Visit; bounded, oldest out. One per Router, on the Router's clock."""

    def __init__(self, *, max_sessions: int = _MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._last: OrderedDict[str, Visit] = OrderedDict()

    def visit(self, session: str | None) -> Visit | None:
        return self._last.get(session) if session else None

    def served(self, session: str | None, visit: Visit) -> None:
        if not session:
            return
        self._last[session] = visit
        self._last.move_to_end(session)
        while len(self._last) > self.max_sessions:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)


def cache_saving_yuan(option: Option, ask: Ask, visit: Visit, now_s: float) -> float:
    """What the option saves on its prompt cache: 0 unless at the visit's region and model, within the TTL."""
    offer = option.offer
    if option.region.id != visit.region or ask.model != visit.model:
        return 0.0
    if not 0.0 <= now_s - visit.start_s <= offer.cache_ttl_s:
        return 0.0
    cut = offer.price.input - offer.price.cached_input
    if cut <= 0:
        return 0.0
    repeated = min(visit.prompt_tokens, ask.input_tokens * offer.token_ratio)
    return repeated * cut / 1e6 * option.factor


def prefer_cached(options: list[Option], ask: Ask, visit: Visit | None, now_s: float) -> list[Option]:
    """The options reordered by score less their prompt-cache saving (stable for equal scores)."""
    if visit is None or len(options) < 2:
        return options
    savings = [cache_saving_yuan(o, ask, visit, now_s) for o in options]
    if not any(savings):
        return options
    order = sorted(range(len(options)), key=lambda i: options[i].score - savings[i])
    return [options[i] for i in order]
