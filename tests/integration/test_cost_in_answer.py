"""Cost in the answer: ``usage.cost_yuan`` and ``usage.suanli`` equal the ledger's settled record,
streamed and not, through the official openai SDK; ``GET /v1/requests/{id}`` for its key only."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import openai

from tests.harness import running_proxy, small_config

MASTER = "sk-master-cost-test"
MESSAGES = [{"role": "user", "content": "西部的算力为什么比东部便宜？"}]


def _get(proxy, path: str, key: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{proxy.port}{path}")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _new_key(proxy, name: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy.port}/admin/keys", data=json.dumps({"name": name}).encode(), method="POST"
    )
    request.add_header("Authorization", f"Bearer {MASTER}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["key"]


async def _one(client: openai.AsyncOpenAI, i: int) -> tuple[str, dict, str]:
    """One request (every third streamed, every fifth an embedding): (request id, usage extras, kind)."""
    model = ("wuhan/deepseek-flash", "deepseek-flash", "shanghai/deepseek-flash")[i % 3]
    if i % 5 == 4:
        raw = await client.embeddings.with_raw_response.create(
            model="text-embedding-v4", input=["算力"] * (1 + i % 4)
        )
        return raw.headers["x-request-id"], raw.parse().usage.model_extra, "embedding"
    if i % 3 == 0:
        stream = await client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=4 + i % 9, stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
        assert usage is not None
        return usage.model_extra["suanli"]["request_id"], usage.model_extra, "stream"
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=4 + i % 9
    )
    return raw.headers["x-request-id"], raw.parse().usage.model_extra, "chat"


def test_usage_cost_equals_the_ledger_for_every_answer(tmp_path: Path):
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:

        async def run() -> list[tuple[str, dict, str]]:
            client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
            gate = asyncio.Semaphore(16)

            async def limited(i: int):
                async with gate:
                    return await _one(client, i)

            try:
                return await asyncio.gather(*(limited(i) for i in range(1000)))
            finally:
                await client.close()

        answers = asyncio.run(run())
        rows = {row.request_id: row for row in proxy.call(lambda r: r.ledger.usage())}
        assert len(rows) == 1000
        kinds = {kind for _, _, kind in answers}
        assert kinds == {"chat", "stream", "embedding"}
        vouchers_seen = set()
        for request_id, extra, _ in answers:
            row = rows[request_id]
            assert extra["cost_yuan"] == row.cost_yuan  # exact: the very float the ledger stored
            suanli = extra["suanli"]
            assert suanli["cash_yuan"] == row.cash_yuan
            assert suanli["region"] == row.region
            assert suanli["voucher"] == row.voucher_id
            assert suanli["voucher_units"] == row.voucher_units
            assert suanli["list_yuan"] >= row.cost_yuan
            vouchers_seen.add(row.voucher_id)
        assert {"wuhan-tokens", None} <= vouchers_seen


def test_a_stream_without_include_usage_has_no_usage_chunk(tmp_path: Path):
    with running_proxy(small_config(tmp_path)) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        chunks = list(client.chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=5, stream=True
        ))
        assert chunks and all(chunk.usage is None for chunk in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_get_request_is_for_its_key_or_the_master_key_only(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        alice, bob = _new_key(proxy, "alice"), _new_key(proxy, "bob")
        client = openai.OpenAI(base_url=proxy.base_url, api_key=alice, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=6
        )
        request_id = raw.headers["x-request-id"]
        usage = raw.parse().usage
        status, record = _get(proxy, f"/v1/requests/{request_id}", alice)
        assert status == 200, record
        assert record["id"] == request_id
        assert record["cost_yuan"] == usage.model_extra["cost_yuan"]
        assert record["usage"]["completion_tokens"] == usage.completion_tokens
        assert _get(proxy, f"/v1/requests/{request_id}", MASTER)[0] == 200
        status, body = _get(proxy, f"/v1/requests/{request_id}", bob)
        assert status == 404 and body["error"]["code"] == "not_found"
        assert _get(proxy, "/v1/requests/req-nothing-like-it", alice)[0] == 404
        assert _get(proxy, f"/v1/requests/{request_id}", None)[0] == 401
