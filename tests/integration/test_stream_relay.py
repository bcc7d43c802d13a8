"""Streams relayed in batches: many SSE events per network read, events split across reads."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import orjson
import pytest
from aiohttp import web

from tests.harness import running_proxy, small_config

pytestmark = pytest.mark.timeout(60)

WORDS = ["东数", "西算", "把", "算力", "引向", "西部", "。"]


def _event(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\r\n\r\n"  # CRLF, as some platforms send


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return _event({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    body = _chunk({"role": "assistant", "content": ""}) + b"".join(_chunk({"content": w}) for w in WORDS)
    usage = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
    body += _chunk({}, "stop") + _event({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                                        "model": "m", "choices": [], "usage": usage})
    body += b"data: [DONE]\r\n\r\n"
    cut = len(body) // 2 + 7  # mid-event
    await response.write(body[:cut])  # most events in one read...
    await asyncio.sleep(0.05)
    await response.write(body[cut:])  # ...and the rest, finishing the split one
    await response.write_eof()
    return response


@contextmanager
def _upstream() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _stream)
    runner = web.AppRunner(app)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.mark.parametrize("include_usage", [False, True])
def test_batched_events_reach_the_sdk_whole_and_usage_settles(tmp_path: Path, include_usage: bool):
    with _upstream() as base_url:
        config = small_config(tmp_path, regions=[{
            "id": "wuhan", "zone": "east", "provider": "openai", "base_url": base_url,
            "rtt_ms": {"east": 5, "west": 30}, "ttft_ms": 50,
            "models": [{"name": "deepseek-flash", "price": {"input": 1.8, "output": 7.2}}],
        }], vouchers=[{"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 100000}])
        with running_proxy(config) as proxy:
            client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, timeout=10)
            stream = client.chat.completions.create(
                model="deepseek-flash", messages=[{"role": "user", "content": "东数西算？"}], stream=True,
                stream_options={"include_usage": True} if include_usage else None,
            )
            chunks = list(stream)
            assert proxy.router is not None and proxy.router.ledger is not None
            rows = proxy.router.ledger.usage()
            balance = proxy.router.ledger.balance("wuhan-tokens")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(WORDS)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if include_usage else 0)
    assert [(r.prompt_tokens, r.completion_tokens, r.region) for r in rows] == [(21, 7, "wuhan")]
    assert balance == pytest.approx(100000 - 28)
