"""The interface every upstream adapter implements, and the data it trades in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from suanli.config import Region

__all__ = ["Endpoint", "Reply", "StreamReply", "Upstream", "UpstreamCall", "Usage"]

Endpoint = Literal["chat/completions", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One call to one region.

    ``body`` is the client's JSON body with ``model`` already set to the region's
    upstream model name. ``wants_usage`` says whether the client itself asked for the
    usage chunk of a stream (``stream_options.include_usage``); the adapter always asks
    the upstream for it and drops it again when the client did not. ``output_tokens`` (the
    longest choice's ``max_tokens``) stretches the wait for a whole answer
    (``Timeouts.whole_answer_s``).
    """

    region: Region
    endpoint: Endpoint
    body: dict
    stream: bool = False
    wants_usage: bool = False
    api_key: str | None = None
    output_tokens: int = 0  # the longest choice it may generate: how long a whole answer may take


@dataclass(slots=True)
class Usage:
    """Token counts as the upstream reported them (in the serving model's tokens)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False  # False: the upstream said nothing, counts are our estimate
    cached_tokens: int = 0  # of prompt_tokens, a prompt-cache hit (usage.prompt_tokens_details)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Reply:
    """A whole (non-streamed) answer."""

    status: int
    body: bytes  # the upstream JSON, relayed as is
    usage: Usage
    ttft_s: float | None  # None: a whole answer has no first token to time (see total_s)
    total_s: float  # seconds from send to the whole answer


@dataclass(slots=True)
class StreamReply:
    """A streamed answer whose first chunk has already arrived.

    ``chunks`` yields SSE bytes ready to relay (``data: {...}\\n\\n``, ending with
    ``data: [DONE]\\n\\n``). ``usage`` is complete once ``chunks`` is exhausted; if the
    stream breaks it holds what was counted so far and ``chunks`` raises UpstreamBroken.
    ``close()`` cancels the upstream call (client went away).
    """

    status: int
    chunks: AsyncIterator[bytes]
    usage: Usage = field(default_factory=Usage)
    ttft_s: float = 0.0

    async def close(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class Upstream(Protocol):
    """An adapter: sends one call, returns the answer or raises UpstreamError.

    A retryable failure must be raised before the first byte reaches the caller: for a
    stream, ``send`` returns only once the first chunk has arrived.
    """

    async def send(self, call: UpstreamCall) -> Reply | StreamReply: ...

    async def close(self) -> None: ...
