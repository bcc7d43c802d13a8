"""Server-sent events of the simulated platforms, paced and optionally cut mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import orjson
from aiohttp import web

from suanli.providers.sim_state import SimState

__all__ = ["ChunkPlan", "stream_chunks"]

_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """One answer, ready to be sent whole or as chunks.

    ``base`` holds the id/object/created/model fields every chunk repeats; ``answers``
    is one list of one-token pieces per choice.
    """

    kind: Literal["chat", "text"]
    base: dict
    answers: list[list[str]]
    finish_reason: str
    usage: dict  # the OpenAI usage object, prompt_tokens_details included
    stream: bool = False
    include_usage: bool = False

    @property
    def tokens(self) -> int:
        return sum(len(pieces) for pieces in self.answers)

    def chunks(self) -> Iterator[tuple[bool, dict]]:
        """``(carries a token, chunk)`` in order; token chunks are the paced ones."""
        # With include_usage OpenAI sends "usage": null on every chunk but the last.
        extra = {"usage": None} if self.include_usage else {}
        for index, pieces in enumerate(self.answers):
            if self.kind == "chat":
                yield (
                    False,
                    {**self.base, "choices": [_delta(index, {"role": "assistant", "content": ""})], **extra},
                )
            for piece in pieces:
                yield True, {**self.base, "choices": [self._choice(index, piece, None)], **extra}
            yield False, {**self.base, "choices": [self._choice(index, "", self.finish_reason)], **extra}
        if self.include_usage:
            yield False, {**self.base, "choices": [], "usage": self.usage}

    def _choice(self, index: int, piece: str, finish: str | None) -> dict:
        if self.kind == "chat":
            return _delta(index, {"content": piece} if piece else {}, finish)
        return {"text": piece, "index": index, "logprobs": None, "finish_reason": finish}


def _delta(index: int, delta: dict, finish: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _abort(request: web.Request, state: SimState) -> None:
    """Cut the TCP connection without a clean end (what ``reset_after_chunks`` tests)."""
    state.count("resets")
    transport = request.transport
    if transport is not None:
        transport.abort()


async def stream_chunks(
    request: web.Request, state: SimState, plan: ChunkPlan, headers: dict[str, str]
) -> web.StreamResponse:
    """Wait for the first byte, then send ``plan`` as SSE, one token per ``ms_per_token``."""
    loop = asyncio.get_running_loop()
    first_byte_s = state.first_byte_s()
    if first_byte_s > 0:
        await asyncio.sleep(first_byte_s)
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    reset_after = state.behaviour.reset_after_chunks
    key = state.region.api_key if state.behaviour.echo_key else None
    per_token_s = state.per_token_s()
    start = loop.time()
    tokens = sent = 0
    try:
        for paced, chunk in plan.chunks():
            if reset_after is not None and sent >= reset_after:
                _abort(request, state)
                return response
            if paced:
                tokens += 1
                # Paced against the start, so sleep overshoots do not add up.
                wait_s = start + tokens * per_token_s - loop.time()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            sent += 1
            if key and sent == 2:  # the echo_key knob: a hostile platform's error event, then the end
                error = {"message": f"overloaded, key {key}", "type": key, "code": key, "param": key}
                await response.write(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
                await response.write_eof()
                return response
        if reset_after is not None and sent >= reset_after:
            _abort(request, state)
            return response
        await response.write(_DONE)
        await response.write_eof()
    except ConnectionResetError:  # the client went away: stop generating
        state.count("disconnects")
    return response
