"""Key budgets over HTTP: 429 budget_exceeded, day and month periods, no overspend under concurrency."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import openai
import pytest

from tests.backends import read
from tests.harness import running_proxy, small_config
from tests.integration.test_keys import MASTER, MESSAGES, Clock, admin, client, new_key

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _cost_of_one(proxy) -> float:
    """What one request of the tests costs at shanghai, measured with the master key."""
    client(proxy, MASTER).chat.completions.create(model="shanghai/deepseek-flash", messages=MESSAGES,
                                                  max_tokens=8)
    (row,) = [r for r in read(proxy, lambda r: r.ledger.usage()) if r.key_id == "master"]
    return row.cost_yuan


def _spent(proxy, key_id: str) -> float:
    return sum(r.cost_yuan for r in read(proxy, lambda r: r.ledger.usage()) if r.key_id == key_id)


def test_spent_budget_is_429_budget_exceeded_and_touches_nothing(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        cost = _cost_of_one(proxy)
        made = new_key(proxy, budget_yuan_per_day=cost * 2.5, allowed_regions=["wuhan"])
        key = client(proxy, made["key"])
        for _ in range(2):
            key.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=8)
        balances = read(proxy, lambda r: r.ledger.balances())
        rows = len(read(proxy, lambda r: r.ledger.usage()))
        retrying = openai.OpenAI(base_url=proxy.base_url, api_key=made["key"], max_retries=3)
        with pytest.raises(openai.RateLimitError) as exc:
            retrying.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=8)
        assert exc.value.status_code == 429
        assert exc.value.code == "budget_exceeded"
        assert exc.value.response.headers["x-should-retry"] == "false"
        assert "budget" in exc.value.message and "today" in exc.value.message
        assert read(proxy, lambda r: r.ledger.balances()) == balances
        assert len(read(proxy, lambda r: r.ledger.usage())) == rows
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
        shown = admin(proxy, "GET", f"/admin/keys/{made['id']}")[1]
        assert shown["spent_yuan_today"] == pytest.approx(_spent(proxy, made["id"]))
        assert shown["held_yuan_today"] == 0
        # The budget gates asks by their upper bound: a smaller max_tokens still fits.
        small = key.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=1)
        assert small.choices


def test_day_budget_resets_at_local_midnight_month_budget_does_not(tmp_path: Path, ledger_opts: dict):
    clock = Clock()
    clock.now = datetime(2026, 12, 10, 23, 0, tzinfo=SHANGHAI)
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER, clock=clock) as proxy:
        cost = _cost_of_one(proxy)
        key = client(proxy, new_key(proxy, budget_yuan_per_day=cost * 2.5, budget_yuan_per_month=cost * 3.5,
                                    allowed_regions=["shanghai"])["key"])
        outcomes = []
        for step in range(6):
            if step == 3:
                clock.now += timedelta(hours=2)  # 01:00 on the 11th: a new day, the same month
            try:
                key.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=8)
                outcomes.append("ok")
            except openai.RateLimitError as exc:
                outcomes.append("month" if "this month" in exc.message else "day")
        assert outcomes == ["ok", "ok", "day", "ok", "month", "month"]


def test_500_simultaneous_requests_never_spend_more_than_the_budget(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        cost = _cost_of_one(proxy)
        budget = cost * 100.5
        made = new_key(proxy, budget_yuan_per_day=budget, allowed_regions=["shanghai"])
        body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 8}

        async def burst() -> list[tuple[int, str | None]]:
            headers = {"Authorization": f"Bearer {made['key']}"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

                async def one() -> tuple[int, str | None]:
                    async with session.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                        answer = await response.json()
                        return response.status, (answer.get("error") or {}).get("code")

                return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(500))), 90)

        answers = asyncio.run(burst())
        served = sum(1 for status, _ in answers if status == 200)
        assert all(code == "budget_exceeded" for status, code in answers if status != 200)
        assert served == 100
        assert _spent(proxy, made["id"]) <= budget
        shown = admin(proxy, "GET", f"/admin/keys/{made['id']}")[1]
        assert shown["spent_yuan_today"] <= budget
        assert shown["held_yuan_today"] == 0
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
