"""The sims' prompt cache: a follow-up repeating a prompt seen within the TTL reports cached tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from suanli.config import Offer, Price, Region
from suanli.providers.sim import SimFleet
from suanli.providers.tokenizer import count_message_tokens

FIRST = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a river in Hubei."},
]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _regions() -> list[Region]:
    offer = Offer(name="chat-model", price=Price(input=2, output=8))
    return [
        Region(id=rid, zone="east", provider="sim", ttft_ms=0, models=(offer,)) for rid in ("east1", "east2")
    ]


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[SimFleet, _Clock]]:
    clock = _Clock()
    async with SimFleet(_regions(), latency_scale=0.0, now_s=clock) as running:
        yield running, clock


async def _turns(sdk: openai.AsyncOpenAI, *, stream: bool = False) -> tuple[int, int, list[dict]]:
    """Two turns of one conversation: (cached tokens of the first, of the second, the second's messages)."""
    first = await sdk.chat.completions.create(model="chat-model", messages=FIRST, max_tokens=5)
    follow = [*FIRST, {"role": "assistant", "content": first.choices[0].message.content},
              {"role": "user", "content": "And one in Gansu?"}]
    if not stream:
        second = await sdk.chat.completions.create(model="chat-model", messages=follow, max_tokens=5)
        return (
            first.usage.prompt_tokens_details.cached_tokens,
            second.usage.prompt_tokens_details.cached_tokens,
            follow,
        )
    events = await sdk.chat.completions.create(
        model="chat-model", messages=follow, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    usage = [e.usage async for e in events if e.usage is not None][-1]
    return first.usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens_details.cached_tokens, follow


@pytest.mark.parametrize("stream", [False, True])
async def test_follow_up_reports_its_repeated_prefix_as_cached(fleet, stream: bool) -> None:
    running, _ = fleet
    async with openai.AsyncOpenAI(base_url=running.urls["east1"], api_key="x", max_retries=0) as sdk:
        first, second, _ = await _turns(sdk, stream=stream)
    assert first == 0
    assert second == count_message_tokens(FIRST)


async def test_cache_is_per_region_and_expires_after_the_ttl(fleet) -> None:
    running, clock = fleet
    async with (
        openai.AsyncOpenAI(base_url=running.urls["east1"], api_key="x", max_retries=0) as east1,
        openai.AsyncOpenAI(base_url=running.urls["east2"], api_key="x", max_retries=0) as east2,
    ):
        await east1.chat.completions.create(model="chat-model", messages=FIRST, max_tokens=5)
        other = await east2.chat.completions.create(model="chat-model", messages=FIRST, max_tokens=5)
        assert other.usage.prompt_tokens_details.cached_tokens == 0  # another platform's cache
        clock.now += 300.0  # the default cache_ttl_s: still held at the edge
        again = await east1.chat.completions.create(model="chat-model", messages=FIRST, max_tokens=5)
        assert again.usage.prompt_tokens_details.cached_tokens == count_message_tokens(FIRST)
        clock.now += 300.5
        late = await east1.chat.completions.create(model="chat-model", messages=FIRST, max_tokens=5)
        assert late.usage.prompt_tokens_details.cached_tokens == 0
