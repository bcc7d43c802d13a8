"""The litellm adapter against provider APIs mocked with respx (litellm's httpx transport)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import respx
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from suanli.config import Offer, Price, Region, Timeouts
from suanli.providers.base import Reply, StreamReply, UpstreamCall
from suanli.providers.errors import UpstreamBroken, UpstreamError
from suanli.providers.litellm_adapter import LiteLLMUpstream, scrub

# litellm's own modules warn about pydantic internals; those are not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm"),
]

CANARY = "sk-canary-7f3a9c1e5b2d4f60"
DEEPSEEK = "https://api.deepseek.test/v1"
DASHSCOPE = "https://dashscope.test/compatible-mode/v1"
MESSAGES = [{"role": "user", "content": "你好"}]
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "deepseek-chat",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "你好！"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
_CHUNK = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-chat"}
CHUNKS = [
    {
        **_CHUNK,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
    },
    {**_CHUNK, "choices": [{"index": 0, "delta": {"content": "你"}, "finish_reason": None}]},
    {**_CHUNK, "choices": [{"index": 0, "delta": {"content": "好"}, "finish_reason": "stop"}]},
    {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
]


def _region(provider: str = "deepseek", base_url: str = DEEPSEEK) -> Region:
    offer = Offer(name="deepseek-v3", upstream="deepseek-chat", price=Price(input=2, output=8))
    timeouts = Timeouts(connect_s=2, first_byte_s=5, idle_s=5)
    return Region(
        id=provider,
        zone="east",
        provider=provider,
        base_url=base_url,
        api_key=CANARY,
        models=(offer,),
        timeouts=timeouts,
    )


def _call(
    endpoint: str = "chat/completions", *, stream: bool = False, wants_usage: bool = False, **body: object
):
    body = {
        "model": "deepseek-chat",
        **({"messages": MESSAGES} if endpoint == "chat/completions" else {}),
        **body,
    }
    return UpstreamCall(
        region=_region(), endpoint=endpoint, body=body, stream=stream, wants_usage=wants_usage
    )


def _sse(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
async def upstream() -> AsyncIterator[LiteLLMUpstream]:
    adapter = LiteLLMUpstream()
    yield adapter
    await adapter.close()


async def _drain(reply: StreamReply) -> list[bytes]:
    return [chunk async for chunk in reply.chunks]


def _payloads(events: list[bytes]) -> list[dict]:
    return [json.loads(e.removeprefix(b"data: ")) for e in events if e != b"data: [DONE]\n\n"]


async def test_chat_answer_is_openai_json_with_usage(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=httpx.Response(200, json=CHAT))
    reply = await upstream.send(_call(max_tokens=16))
    assert isinstance(reply, Reply) and reply.status == 200
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.reported) == (5, 2, True)
    answer = ChatCompletion.model_validate_json(reply.body)
    assert answer.choices[0].message.content == "你好！"
    assert b"provider_specific_fields" not in reply.body
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {CANARY}"
    assert json.loads(sent.content)["model"] == "deepseek-chat"
    assert json.loads(sent.content)["max_tokens"] == 16


async def test_stream_relays_sse_and_drops_the_unasked_usage_chunk(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    stream = httpx.Response(200, content=_sse(CHUNKS), headers={"Content-Type": "text/event-stream"})
    route = respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=stream)
    reply = await upstream.send(_call(stream=True))
    assert isinstance(reply, StreamReply)
    events = await _drain(reply)
    assert events[-1] == b"data: [DONE]\n\n"
    payloads = _payloads(events)
    assert all(payload["choices"] for payload in payloads)
    assert (
        "".join(ChatCompletionChunk.model_validate(p).choices[0].delta.content or "" for p in payloads)
        == "你好"
    )
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.reported) == (5, 2, True)
    assert json.loads(route.calls.last.request.content)["stream_options"] == {"include_usage": True}


async def test_stream_keeps_the_usage_chunk_when_asked(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    stream = httpx.Response(200, content=_sse(CHUNKS), headers={"Content-Type": "text/event-stream"})
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=stream)
    reply = await upstream.send(_call(stream=True, wants_usage=True, stream_options={"include_usage": True}))
    last = ChatCompletionChunk.model_validate(_payloads(await _drain(reply))[-1])
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens == 7


async def test_text_completion(upstream: LiteLLMUpstream, respx_mock: respx.MockRouter) -> None:
    # litellm serves text completions for chat-only providers through their chat endpoint.
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=httpx.Response(200, json=CHAT))
    reply = await upstream.send(_call("completions", prompt="你好"))
    assert isinstance(reply, Reply)
    assert Completion.model_validate_json(reply.body).choices[0].text == "你好！"
    assert reply.usage.completion_tokens == 2


async def test_embeddings(upstream: LiteLLMUpstream, respx_mock: respx.MockRouter) -> None:
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "model": "text-embedding-v4",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    route = respx_mock.post(f"{DASHSCOPE}/embeddings").mock(return_value=httpx.Response(200, json=answer))
    body = {"model": "text-embedding-v4", "input": ["算力券"], "dimensions": 3}
    call = UpstreamCall(region=_region("dashscope", DASHSCOPE), endpoint="embeddings", body=body)
    reply = await upstream.send(call)
    assert isinstance(reply, Reply)
    assert CreateEmbeddingResponse.model_validate_json(reply.body).data[0].embedding == [0.1, 0.2, 0.3]
    assert (reply.usage.prompt_tokens, reply.usage.reported) == (3, True)
    assert json.loads(route.calls.last.request.content)["dimensions"] == 3


async def test_429_is_retryable_with_retry_after(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    response = _error(429, "Rate limit reached", "rate_limit_exceeded", **{"Retry-After": "7"})
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=response)
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call())
    error = caught.value
    assert (error.status, error.retryable, error.retry_after_s) == (429, True, 7.0)
    assert error.code == "rate_limit_exceeded"


async def test_500_is_retryable(upstream: LiteLLMUpstream, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=_error(500, "boom"))
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call())
    assert (caught.value.status, caught.value.retryable) == (500, True)


async def test_503_before_the_first_chunk_is_retryable(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=_error(503, "busy"))
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call(stream=True))
    assert caught.value.retryable and not isinstance(caught.value, UpstreamBroken)


async def test_connection_failure_is_retryable(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call())
    assert caught.value.retryable


async def test_401_is_retried_elsewhere_and_never_shows_the_key(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    # Some platforms echo the key they were sent; none of it may reach our messages or logs.
    caplog.set_level(logging.DEBUG)
    response = _error(401, f"Incorrect API key provided: {CANARY}", "invalid_api_key")
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=response)
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call())
    error = caught.value
    # Our key for this region is wrong, not the client's: another region may still serve it.
    assert (error.status, error.retryable) == (401, True)
    rendered = "".join(traceback.format_exception(error)) + repr(error) + error.message + str(error.code)
    assert CANARY not in rendered and CANARY[-8:] not in rendered
    assert not [r for r in caplog.records if CANARY[-8:] in r.getMessage()]


async def test_400_is_final(upstream: LiteLLMUpstream, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=_error(400, "bad request"))
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call())
    assert (caught.value.status, caught.value.retryable) == (400, False)


async def test_402_is_insufficient_quota(upstream: LiteLLMUpstream, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=_error(402, "Insufficient Balance"))
    with pytest.raises(UpstreamError) as caught:
        await upstream.send(_call())
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (
        402,
        "insufficient_quota",
        True,
    )


class _BrokenStream(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield _sse(CHUNKS[:2]).removesuffix(b"data: [DONE]\n\n")
        raise httpx.ReadError("connection reset by peer")


async def test_a_stream_breaking_after_the_first_chunk_raises_upstream_broken(
    upstream: LiteLLMUpstream, respx_mock: respx.MockRouter
) -> None:
    response = httpx.Response(200, stream=_BrokenStream(), headers={"Content-Type": "text/event-stream"})
    respx_mock.post(f"{DEEPSEEK}/chat/completions").mock(return_value=response)
    reply = await upstream.send(_call(stream=True))
    assert isinstance(reply, StreamReply)
    received = []
    with pytest.raises(UpstreamBroken):
        async for chunk in reply.chunks:
            received.append(chunk)
    assert received
    assert not reply.usage.reported and reply.usage.completion_tokens >= 1


def test_scrub_masks_the_key_its_tail_and_bearer_tokens() -> None:
    text = f"key {CANARY} tail {CANARY[-8:]} header Bearer abc.def sk-otherkey123"
    cleaned = scrub(text, CANARY)
    assert CANARY not in cleaned and CANARY[-8:] not in cleaned
    assert "abc.def" not in cleaned and "sk-otherkey123" not in cleaned


def test_importing_the_adapter_does_not_import_litellm() -> None:
    code = "import sys, providers, providers.litellm_adapter\nassert 'litellm' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])


def test_warm_up_imports_litellm_once_in_the_background():
    from suanli.providers.litellm_adapter import load_litellm, warm_up

    first = warm_up()
    if first is not None:
        first.join(120)
        assert not first.is_alive()
    assert warm_up() is None  # loaded (or loading): never a second import thread
    assert load_litellm().completion is not None
