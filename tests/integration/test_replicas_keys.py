"""Two replica processes on one PostgreSQL ledger share one key's budget and never overspend it."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import aiohttp
import pytest
import yaml

from suanli.router.ledger.keys import YUAN_Q
from suanli.router.ledger.postgres.escrow_sql import KEY_BOOKS
from tests.backends import sql
from tests.harness import small_config
from tests.integration.test_replicas import Replica
from tests.pg import drop_schema, fresh_pg_url, requires_pg

pytestmark = [requires_pg, pytest.mark.timeout(120)]

MASTER = "sk-master-replica-keys"
MESSAGES = [{"role": "user", "content": "你好, 算力"}]


def _post(port: int, path: str, body: dict, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


@pytest.fixture
async def pair(tmp_path: Path):
    url = fresh_pg_url()
    config = small_config(tmp_path, ledger={"url": url}, master_key=MASTER, vouchers=[])
    config_path = tmp_path / "config.yaml"
    dumped = config.model_dump(mode="json", exclude_none=True)
    config_path.write_text(yaml.safe_dump(dumped, allow_unicode=True))
    replicas = [Replica(config_path, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        for r in replicas:
            r.wait_up()
        yield url, replicas
    finally:
        for r in replicas:
            r.stop()
        await drop_schema(url)


async def test_two_replicas_sharing_one_key_budget_never_overspend_it(pair) -> None:
    url, replicas = pair
    ask = {"model": "shanghai/deepseek-flash", "messages": MESSAGES, "max_tokens": 8}
    _, first = _post(replicas[0].port, "/v1/chat/completions", ask, MASTER)
    ((cost,),) = await asyncio.to_thread(sql, url, "SELECT cost_yuan FROM usage")
    budget = cost * 100.5
    status, made = _post(replicas[0].port, "/admin/keys",
                         {"name": "shared", "budget_yuan_per_day": budget, "allowed_regions": ["shanghai"]},
                         MASTER)
    assert status == 201 and first["choices"]
    body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 8}
    headers = {"Authorization": f"Bearer {made['key']}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=headers) as session:

        async def one(i: int) -> tuple[int, str | None]:
            port = replicas[i % 2].port
            async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
                answer = await response.json()
                return response.status, (answer.get("error") or {}).get("code")

        answers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(500))), 90)
    served = [i for i, (status, _) in enumerate(answers) if status == 200]
    assert all(code == "budget_exceeded" for status, code in answers if status != 200)
    # Which replica serves the budget is not fixed: under load one may take it all in its slices
    # before the other asks (a CI run at load 10 had one replica serve all 100).
    # Never more than the budget; in a burst a replica may refuse the last request or two while
    # the other's budget slice still holds their part (escrow: it is recalled within a second).
    assert 98 <= len(served) <= 100
    mine = f"key_id = '{made['id']}'"
    rows = await asyncio.to_thread(sql, url, f"SELECT SUM(cost_yuan), COUNT(*) FROM usage WHERE {mine}")
    assert rows[0][1] == len(served) and rows[0][0] <= budget
    # Read as the books show it: spend inside a replica's live budget slice counts as spent, and
    # the slice's unspent rest is no request's hold (postgres/escrow_sql.py).
    spend = await asyncio.to_thread(sql, url, f"SELECT period, spent_q, held_q FROM {KEY_BOOKS} WHERE {mine}")
    assert {held for _, _, held in spend} == {0}
    assert all(spent <= round(budget * YUAN_Q) for _, spent, _ in spend)
    assert await asyncio.to_thread(sql, url, "SELECT COUNT(*) FROM holds WHERE state = 'pending'") == [(0,)]
