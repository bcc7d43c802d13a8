"""The simulated city platforms, driven over real HTTP on loopback by the official openai SDK."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import openai
import pytest

from suanli.config import Offer, Price, Region, SimBehaviour
from suanli.providers.sim import SimFleet, run_fleet_forever, sim_regions
from suanli.providers.sim_state import FaultUpdateError
from suanli.providers.tokenizer import count_message_tokens, count_tokens

CANARY_KEY = "sk-sim-canary-0123456789"
MakeClient = Callable[..., openai.AsyncOpenAI]  # (region id, api_key=...) -> SDK client
MESSAGES = [{"role": "user", "content": "请用一句话介绍东数西算。Answer briefly, please."}]


def _region(region_id: str, *, ratio: float = 1.0, api_key: str | None = None, **extra: object) -> Region:
    offers = (
        Offer(
            name="chat-model", upstream=f"{region_id}-chat", price=Price(input=1, output=2), token_ratio=ratio
        ),
        Offer(name="embed-model", price=Price(input=0.5, output=0), token_ratio=ratio),
    )
    return Region(
        id=region_id, zone="east", provider="sim", ttft_ms=0, models=offers, api_key=api_key, **extra
    )


REGIONS = [
    _region("east1"),
    _region("west1", ratio=1.3),
    _region("keyed", api_key=CANARY_KEY),
]


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    async with SimFleet(REGIONS, latency_scale=0.0) as running:
        yield running


@pytest.fixture
async def client(fleet: SimFleet) -> AsyncIterator[MakeClient]:
    """Makes SDK clients for one region of the fleet, and closes them afterwards."""
    made: list[openai.AsyncOpenAI] = []

    def make(region_id: str, api_key: str = "anything") -> openai.AsyncOpenAI:
        made.append(openai.AsyncOpenAI(base_url=fleet.urls[region_id], api_key=api_key, max_retries=0))
        return made[-1]

    yield make
    for sdk in made:
        await sdk.close()


def _expected_prompt(ratio: float) -> int:
    return math.ceil(round(count_message_tokens(MESSAGES) * ratio, 6))


async def test_urls_end_in_v1_and_only_local_sims_start() -> None:
    regions = [*REGIONS, _region("remote", base_url="http://10.0.0.1/v1")]
    regions.append(Region(id="real", zone="west", provider="deepseek", models=REGIONS[0].models))
    assert [r.id for r in sim_regions(regions)] == ["east1", "west1", "keyed"]
    async with SimFleet(regions, latency_scale=0.0) as fleet:
        assert sorted(fleet.urls) == ["east1", "keyed", "west1"]
        assert all(url.startswith("http://127.0.0.1:") and url.endswith("/v1") for url in fleet.urls.values())
    assert fleet.urls == {}


async def test_chat_usage_is_reference_count_times_ratio(fleet: SimFleet, client: MakeClient) -> None:
    for region_id, ratio in (("east1", 1.0), ("west1", 1.3)):
        reply = await client(region_id).chat.completions.create(model=f"{region_id}-chat", messages=MESSAGES)
        assert reply.usage.prompt_tokens == _expected_prompt(ratio)
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert _expected_prompt(1.0) != _expected_prompt(1.3)


async def test_max_tokens_gives_exactly_that_many_completion_tokens(
    fleet: SimFleet, client: MakeClient
) -> None:
    client = client("east1")
    for limit in (1, 7, 50, 300):
        reply = await client.chat.completions.create(model="east1-chat", messages=MESSAGES, max_tokens=limit)
        assert reply.usage.completion_tokens == limit
        assert count_tokens(reply.choices[0].message.content) == limit
        assert reply.choices[0].finish_reason == "length"
    reply = await client.chat.completions.create(
        model="east1-chat", messages=MESSAGES, max_completion_tokens=9
    )
    assert reply.usage.completion_tokens == 9


async def test_default_length_is_deterministic_per_prompt_and_region(
    fleet: SimFleet, client: MakeClient
) -> None:
    east = client("east1")
    first = await east.chat.completions.create(model="east1-chat", messages=MESSAGES)
    again = await east.chat.completions.create(model="east1-chat", messages=MESSAGES)
    west = await client("west1").chat.completions.create(model="west1-chat", messages=MESSAGES)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != west.choices[0].message.content
    assert 16 <= first.usage.completion_tokens <= 64
    assert first.choices[0].finish_reason == "stop"


async def test_stream_include_usage_ends_with_a_usage_chunk(fleet: SimFleet, client: MakeClient) -> None:
    stream = await client("west1").chat.completions.create(
        model="west1-chat",
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == _expected_prompt(1.3)
    pieces = [c.choices[0].delta.content for c in chunks[1:-1] if c.choices[0].delta.content]
    assert len(pieces) == 12
    assert chunks[-2].choices[0].finish_reason == "length"


async def test_stream_without_include_usage_has_no_usage_chunk(fleet: SimFleet, client: MakeClient) -> None:
    stream = await client("east1").chat.completions.create(
        model="east1-chat", messages=MESSAGES, max_tokens=3, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) != ""


async def test_raw_stream_is_openai_sse(fleet: SimFleet) -> None:
    body = {"model": "east1-chat", "messages": MESSAGES, "max_tokens": 2, "stream": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(fleet.urls["east1"] + "/chat/completions", json=body) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            raw = (await response.read()).decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])


async def test_completions_stream_and_not(fleet: SimFleet, client: MakeClient) -> None:
    client = client("east1")
    reply = await client.completions.create(model="east1-chat", prompt=["one", "two"], max_tokens=4)
    assert len(reply.choices) == 2 and reply.usage.completion_tokens == 8
    assert reply.usage.prompt_tokens == count_tokens("one") + count_tokens("two")
    stream = await client.completions.create(
        model="east1-chat", prompt="one", max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) == 5
    assert chunks[-1].usage.completion_tokens == 5


async def test_embeddings_honour_dimensions_and_are_deterministic(
    fleet: SimFleet, client: MakeClient
) -> None:
    east = await client("east1").embeddings.create(model="embed-model", input=["a", "b"], dimensions=16)
    west = await client("west1").embeddings.create(
        model="embed-model", input="a", dimensions=16, encoding_format="float"
    )
    assert [len(item.embedding) for item in east.data] == [16, 16]
    assert math.isclose(sum(x * x for x in east.data[0].embedding), 1.0, rel_tol=1e-5)
    assert west.data[0].embedding == pytest.approx(east.data[0].embedding, abs=1e-6)
    assert east.data[0].embedding != east.data[1].embedding
    assert east.usage.prompt_tokens == count_tokens("a") + count_tokens("b")
    default = await client("east1").embeddings.create(model="embed-model", input="x")
    assert len(default.data[0].embedding) == 1024


async def test_models_list_names_upstream_models(fleet: SimFleet, client: MakeClient) -> None:
    models = await client("west1").models.list()
    assert [m.id for m in models.data] == ["west1-chat", "embed-model"]


async def test_unknown_model_is_an_openai_404(fleet: SimFleet, client: MakeClient) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client("east1").chat.completions.create(model="chat-model", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


async def test_bad_input_is_400(fleet: SimFleet, client: MakeClient) -> None:
    client = client("east1")
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="east1-chat", messages=MESSAGES, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="east1-chat", messages=[])
    async with aiohttp.ClientSession() as session:
        async with session.post(fleet.urls["east1"] + "/chat/completions", data=b"{nope") as response:
            assert response.status == 400
            assert set((await response.json())["error"]) == {"message", "type", "param", "code"}


async def test_api_key_is_required_only_where_configured(fleet: SimFleet, client: MakeClient) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await client("keyed", "sk-wrong-key").chat.completions.create(model="keyed-chat", messages=MESSAGES)
    assert "sk-wrong-key" not in str(caught.value)
    reply = await client("keyed", CANARY_KEY).chat.completions.create(
        model="keyed-chat", messages=MESSAGES, max_tokens=2
    )
    assert reply.usage.completion_tokens == 2


async def test_error_rate_one_answers_the_error_status(fleet: SimFleet, client: MakeClient) -> None:
    fleet.set_faults("east1", error_rate=1.0, error_status=503)
    with pytest.raises(openai.InternalServerError) as caught:
        await client("east1").chat.completions.create(model="east1-chat", messages=MESSAGES)
    assert caught.value.status_code == 503
    fleet.reset_faults("east1")
    await client("east1").chat.completions.create(model="east1-chat", messages=MESSAGES, max_tokens=1)


async def test_error_rate_is_seeded(fleet: SimFleet) -> None:
    async def outcomes() -> list[int]:
        fleet.set_faults("east1", error_rate=0.5, seed=42)
        statuses = []
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                body = {"model": "east1-chat", "messages": MESSAGES, "max_tokens": 1}
                async with session.post(fleet.urls["east1"] + "/chat/completions", json=body) as response:
                    statuses.append(response.status)
        return statuses

    first = await outcomes()
    assert first == await outcomes()
    assert {200, 503} == set(first)


async def test_rate_limit_answers_429_with_retry_after(fleet: SimFleet, client: MakeClient) -> None:
    fleet.set_faults("west1", rate_limit_rpm=2)
    client = client("west1")
    for _ in range(2):
        await client.chat.completions.create(model="west1-chat", messages=MESSAGES, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="west1-chat", messages=MESSAGES, max_tokens=1)
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 60
    assert caught.value.code == "rate_limit_exceeded"


async def test_reset_after_chunks_breaks_the_stream(fleet: SimFleet, client: MakeClient) -> None:
    fleet.set_faults("east1", reset_after_chunks=3)
    stream = await client("east1").chat.completions.create(
        model="east1-chat", messages=MESSAGES, max_tokens=20, stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert fleet.stats("east1")["resets"] == 1


async def test_stall_and_ttft_delay_the_first_byte(fleet: SimFleet, client: MakeClient) -> None:
    fleet.set_faults("east1", latency_scale=1.0, ttft_ms=50, stall_ms=100)
    start = time.perf_counter()
    await client("east1").chat.completions.create(model="east1-chat", messages=MESSAGES, max_tokens=1)
    assert time.perf_counter() - start >= 0.15


async def test_stream_is_paced_per_token(fleet: SimFleet, client: MakeClient) -> None:
    fleet.set_faults("east1", latency_scale=1.0, ttft_ms=50, ms_per_token=20)
    start = time.perf_counter()
    stream = await client("east1").chat.completions.create(
        model="east1-chat", messages=MESSAGES, max_tokens=5, stream=True
    )
    arrivals = [time.perf_counter() - start async for _ in stream]
    assert arrivals[0] >= 0.05
    assert arrivals[-1] >= 0.05 + 5 * 0.02


async def test_fault_endpoint_updates_reads_and_resets(fleet: SimFleet) -> None:
    control = fleet.urls["east1"].removesuffix("/v1") + "/sim/faults"
    async with aiohttp.ClientSession() as session:
        async with session.post(control, json={"error_rate": 1.0, "error_status": 502}) as response:
            assert response.status == 200
            assert (await response.json())["error_status"] == 502
        body = {"model": "east1-chat", "messages": MESSAGES}
        async with session.post(fleet.urls["east1"] + "/chat/completions", json=body) as response:
            assert response.status == 502
            assert (await response.json())["error"]["type"] == "server_error"
        async with session.post(control, json={"no_such_knob": 1}) as response:
            assert response.status == 400
        async with session.post(control, json={"error_rate": 2}) as response:
            assert response.status == 400
        async with session.delete(control) as response:
            assert (await response.json())["error_rate"] == 0.0
        async with session.get(control) as response:
            assert (await response.json())["error_status"] == SimBehaviour().error_status


def test_set_faults_needs_a_started_fleet() -> None:
    with pytest.raises(KeyError):
        SimFleet(REGIONS).set_faults("east1", error_rate=1.0)


async def test_set_faults_validates(fleet: SimFleet) -> None:
    with pytest.raises(FaultUpdateError):
        fleet.set_faults("east1", stall_ms=-1)
    with pytest.raises(FaultUpdateError):
        fleet.set_faults("east1", bogus=True)


async def test_run_fleet_forever_prints_the_table_until_cancelled(capsys: pytest.CaptureFixture[str]) -> None:
    from suanli.config import load_catalog

    task = asyncio.create_task(run_fleet_forever(load_catalog(), host="127.0.0.1", base_port=None))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if "qingyang" in capsys.readouterr().out:
            break
    else:
        pytest.fail("no table printed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
