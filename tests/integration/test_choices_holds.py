"""Holds cover every choice the upstream bills: ``n`` (``best_of``, several prompts) times the output cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.backends import read
from tests.harness import running_proxy, small_config
from tests.integration.test_keys import MASTER, MESSAGES, admin, client, new_key


def _spent(proxy, key_id: str) -> float:
    return sum(r.cost_yuan for r in read(proxy, lambda r: r.ledger.usage()) if r.key_id == key_id)


def test_concurrent_n16_requests_never_overspend_a_day_budget(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        one = client(proxy, MASTER).chat.completions.create(
            model="shanghai/deepseek-flash", messages=MESSAGES, max_tokens=8, n=16
        )
        assert len(one.choices) == 16
        (row,) = [r for r in read(proxy, lambda r: r.ledger.usage()) if r.key_id == "master"]
        assert row.completion_tokens == 16 * 8
        budget = row.cost_yuan * 2.5  # room for two such requests, not three
        made = new_key(proxy, budget_yuan_per_day=budget, allowed_regions=["shanghai"])
        body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 8, "n": 16}

        async def burst() -> list[tuple[int, str | None]]:
            headers = {"Authorization": f"Bearer {made['key']}"}
            async with aiohttp.ClientSession(headers=headers) as session:

                async def one_call() -> tuple[int, str | None]:
                    async with session.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                        answer = await response.json()
                        return response.status, (answer.get("error") or {}).get("code")

                return await asyncio.wait_for(asyncio.gather(*(one_call() for _ in range(10))), 60)

        answers = asyncio.run(burst())
        assert all(code == "budget_exceeded" for status, code in answers if status != 200)
        assert sum(1 for status, _ in answers if status == 200) == 2
        assert _spent(proxy, made["id"]) <= budget
        shown = admin(proxy, "GET", f"/admin/keys/{made['id']}")[1]
        assert shown["spent_yuan_today"] <= budget and shown["held_yuan_today"] == 0
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0


def test_default_output_cap_is_held_per_choice(tmp_path: Path):
    """No max_tokens: the hold is n x default_max_tokens, so a budget for one default choice refuses n=4."""
    with running_proxy(small_config(tmp_path, default_max_tokens=64), master_key=MASTER) as proxy:
        made = new_key(proxy, budget_yuan_per_day=0.0012, allowed_regions=["shanghai"])  # ~1.5 choices of 64
        key = client(proxy, made["key"])
        assert key.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices
        status, body = None, None
        try:
            key.chat.completions.create(model="deepseek-flash", messages=MESSAGES, n=4)
        except Exception as exc:  # noqa: BLE001 - the SDK's RateLimitError, checked below
            status, body = getattr(exc, "status_code", None), getattr(exc, "body", None)
        assert status == 429 and body["code"] == "budget_exceeded"


def test_a_voucher_pays_a_whole_n_request_it_can_cover(tmp_path: Path, ledger_opts: dict):
    """The voucher hold is sized for n choices, so the voucher (not cash) pays all of them."""
    with running_proxy(small_config(tmp_path, **ledger_opts)) as proxy:
        answer = client(proxy, "any").chat.completions.with_raw_response.create(
            model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=8, n=16
        )
        assert answer.headers["x-suanli-voucher"] == "wuhan-tokens"
        (row,) = read(proxy, lambda r: r.ledger.usage())
        assert row.completion_tokens == 128
        assert row.voucher_units == row.tokens and row.cash_yuan == 0


def test_completions_hold_counts_prompts_and_best_of(tmp_path: Path):
    from suanli.router.core.validate import max_output_tokens

    body = {"prompt": ["a", "b", "c"], "max_tokens": 10, "n": 2, "best_of": 5}
    assert max_output_tokens("completions", body, 4096) == 3 * 5 * 10
    assert max_output_tokens("completions", {"prompt": [1, 2, 3], "max_tokens": 10}, 4096) == 10
    assert max_output_tokens("chat/completions", {"n": 3}, 100) == 300
    assert max_output_tokens("embeddings", {"n": 3}, 100) == 0
