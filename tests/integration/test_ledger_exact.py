"""Ledger exactness through HTTP: balances move by exactly the reported usage, under concurrency too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from tests.harness import running_proxy, small_config

MESSAGES = [{"role": "user", "content": "西部的算力为什么比东部便宜？"}]
FAR_FUTURE = {"valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}


def _tokens_per_request(tmp_path: Path, max_tokens: int) -> int:
    """What one request costs at wuhan, measured through a cash-only proxy."""
    with running_proxy(small_config(tmp_path / "probe", vouchers=[])) as probe:
        client = openai.OpenAI(base_url=probe.base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=max_tokens
        )
        return reply.usage.total_tokens


def test_after_n_requests_each_balance_is_start_minus_reported_usage(tmp_path: Path):
    with running_proxy(small_config(tmp_path)) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        start_tokens = proxy.call(lambda r: r.ledger.balance("wuhan-tokens"))
        start_credit = proxy.call(lambda r: r.ledger.balance("shanghai-credit"))
        paid_tokens, paid_yuan = 0, 0.0
        for i in range(12):
            raw = client.chat.completions.with_raw_response.create(
                model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=3 + i, stream=False
            )
            assert raw.headers["x-suanli-voucher"] == "wuhan-tokens"
            paid_tokens += raw.parse().usage.total_tokens
            raw = client.embeddings.with_raw_response.create(
                model="text-embedding-v4", input=["算力"] * (i + 1)
            )
            assert raw.headers["x-suanli-voucher"] == "shanghai-credit"
            paid_yuan += raw.parse().usage.prompt_tokens * 0.5 / 1e6
        for _ in range(3):
            stream = client.chat.completions.create(
                model="wuhan/deepseek-flash",
                messages=MESSAGES,
                max_tokens=7,
                stream=True,
                stream_options={"include_usage": True},
            )
            paid_tokens += [c.usage for c in stream if c.usage][0].total_tokens
        assert proxy.call(lambda r: r.ledger.balance("wuhan-tokens")) == start_tokens - paid_tokens
        assert proxy.call(lambda r: r.ledger.balance("shanghai-credit")) == pytest.approx(
            start_credit - paid_yuan, abs=1e-12
        )
        assert proxy.call(lambda r: r.ledger.pending_holds()) == 0
        rows = proxy.call(lambda r: r.ledger.usage())
        assert len(rows) == 27
        assert sum(row.voucher_units for row in rows if row.voucher_id == "wuhan-tokens") == paid_tokens


def test_200_simultaneous_requests_on_a_voucher_for_50(tmp_path: Path):
    per_request = _tokens_per_request(tmp_path, max_tokens=16)
    voucher = {
        "id": "wuhan-tokens",
        "region": "wuhan",
        "kind": "tokens",
        "amount": 50 * per_request,
        **FAR_FUTURE,
    }
    config = small_config(tmp_path, vouchers=[voucher])
    with running_proxy(config, sim_latency_scale=1.0) as proxy:

        async def one(client: openai.AsyncOpenAI) -> tuple[str, int]:
            raw = await client.chat.completions.with_raw_response.create(
                model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=16
            )
            return raw.headers["x-suanli-voucher"], raw.parse().usage.total_tokens

        async def burst() -> list[tuple[str, int]]:
            client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, timeout=60)
            try:
                return await asyncio.gather(*(one(client) for _ in range(200)))
            finally:
                await client.close()

        answers = asyncio.run(burst())
        paid_by_voucher = [tokens for voucher_id, tokens in answers if voucher_id == "wuhan-tokens"]
        assert len(answers) == 200
        assert len(paid_by_voucher) == 50
        assert all(tokens == per_request for _, tokens in answers)
        assert proxy.call(lambda r: r.ledger.balance("wuhan-tokens")) == 0
        rows = proxy.call(lambda r: r.ledger.usage())
        assert len(rows) == 200
        assert sum(row.voucher_units for row in rows) == 50 * per_request
        assert sum(1 for row in rows if row.voucher_id is None and row.cash_yuan > 0) == 150
        assert proxy.call(lambda r: r.ledger.pending_holds()) == 0
