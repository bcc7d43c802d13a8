"""The official openai SDK, sync and async, against the real proxy and sim platforms on loopback."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.harness import ProxyThread, running_proxy, small_config

MESSAGES = [{"role": "user", "content": "请用一句话介绍庆阳的算力枢纽。"}]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    with running_proxy(small_config(tmp_path_factory.mktemp("sdk"))) as running:
        yield running


@pytest.fixture
def client(proxy: ProxyThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


@pytest.fixture
def aclient(proxy: ProxyThread) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def test_sync_chat_answers_with_routing_headers(client: openai.OpenAI):
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=12
    )
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert raw.headers["x-suanli-region"] in {"shanghai", "wuhan"}  # interactive stays east
    assert raw.headers["x-suanli-attempts"] == "1"
    assert float(raw.headers["x-suanli-cost-yuan"]) >= 0
    assert raw.headers["x-suanli-voucher"] in {"wuhan-tokens", "none"}


def test_tokens_voucher_goes_down_by_exactly_the_reported_usage(client: openai.OpenAI, proxy: ProxyThread):
    before = proxy.call(lambda r: r.ledger.balance("wuhan-tokens"))
    raw = client.chat.completions.with_raw_response.create(
        model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=20
    )
    usage = raw.parse().usage
    after = proxy.call(lambda r: r.ledger.balance("wuhan-tokens"))
    assert raw.headers["x-suanli-region"] == "wuhan"
    assert raw.headers["x-suanli-voucher"] == "wuhan-tokens"
    assert before - after == usage.total_tokens
    assert float(raw.headers["x-suanli-cost-yuan"]) == 0.0


@pytest.fixture(scope="module")
def cash_only(tmp_path_factory: pytest.TempPathFactory):
    with running_proxy(small_config(tmp_path_factory.mktemp("cash"), vouchers=[])) as running:
        yield openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)


def test_interactive_stays_east_and_batch_goes_west(cash_only: openai.OpenAI):
    interactive = cash_only.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=8
    )
    batch = cash_only.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=8, extra_headers={"X-Suanli-Class": "batch"}
    )
    assert interactive.headers["x-suanli-region"] == "wuhan"  # cheapest within the 400 ms SLO
    assert batch.headers["x-suanli-region"] == "qingyang"  # cheapest of all, too far for interactive
    assert float(batch.headers["x-suanli-cost-yuan"]) < float(interactive.headers["x-suanli-cost-yuan"])


def test_service_tier_flex_means_batch(cash_only: openai.OpenAI):
    raw = cash_only.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=4, service_tier="flex"
    )
    assert raw.headers["x-suanli-region"] == "qingyang"


def test_unknown_class_is_400(cash_only: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as exc:
        cash_only.chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, extra_headers={"X-Suanli-Class": "urgent"}
        )
    assert exc.value.body["param"] == "X-Suanli-Class"


async def test_async_stream_relays_chunks_and_usage_when_asked(aclient: openai.AsyncOpenAI):
    stream = await aclient.chat.completions.create(
        model="deepseek-flash",
        messages=MESSAGES,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces)
    assert usage is not None and usage.completion_tokens == 10


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI):
    chunks = list(
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=6, stream=True)
    )
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


def test_completions_endpoint(client: openai.OpenAI):
    reply = client.completions.create(model="deepseek-flash", prompt="东数西算", max_tokens=5)
    assert reply.choices[0].text and reply.usage.completion_tokens == 5


async def test_async_embeddings_paid_by_a_model_restricted_credit(aclient: openai.AsyncOpenAI):
    raw = await aclient.embeddings.with_raw_response.create(
        model="text-embedding-v4", input=["算力券", "西部"]
    )
    reply = raw.parse()
    assert len(reply.data) == 2 and len(reply.data[0].embedding) > 0
    assert raw.headers["x-suanli-region"] == "shanghai"
    assert raw.headers["x-suanli-voucher"] == "shanghai-credit"


def test_model_list_has_public_and_pinned_names(client: openai.OpenAI):
    ids = {model.id for model in client.models.list()}
    assert {"deepseek-flash", "text-embedding-v4", "wuhan/deepseek-flash"} <= ids
    assert client.models.retrieve("deepseek-flash").id == "deepseek-flash"


def test_unknown_model_is_404(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert exc.value.code == "model_not_found"


def test_negative_max_tokens_is_400(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=-5)
    assert exc.value.body["param"] == "max_tokens"


def test_interactive_with_no_region_in_slo_is_503(tmp_path: Path):
    config = small_config(tmp_path, classes={"interactive": {"latency_slo_ms": 10}})
    with running_proxy(config) as slow:
        client = openai.OpenAI(base_url=slow.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as exc:
            client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert exc.value.status_code == 503
        assert exc.value.code == "no_route"


def test_master_key_is_required_when_set(tmp_path: Path):
    with running_proxy(small_config(tmp_path), master_key="sk-master-test") as locked:
        wrong = openai.OpenAI(base_url=locked.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=2)
        right = openai.OpenAI(base_url=locked.base_url, api_key="sk-master-test", max_retries=0)
        assert right.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=2).choices
