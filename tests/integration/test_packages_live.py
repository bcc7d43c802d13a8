"""Packages and daily caps live, through the official openai SDK on a virtual clock: a daily package
resets at local midnight without a restart and what a day left is reported lost; a daily cap is
never passed by concurrent requests."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import openai
import pytest
import yaml

from suanli.router.core.clocks import VirtualClock
from suanli.router.ops.cli import main
from tests.backends import read
from tests.harness import running_proxy, small_config
from tests.integration.workload_helpers import TEN_AM

pytestmark = pytest.mark.timeout(90)
MIDNIGHT = TEN_AM.replace(hour=0) + timedelta(days=1)  # 2026-12-02 00:00 Shanghai


def _voucher(**extra: object) -> dict:
    return {"id": "sh-pkg", "region": "shanghai", "models": ["deepseek-flash"],
            "valid_from": "2026-11-01T00:00:00+08:00", "expires": "2027-03-01T00:00:00+08:00", **extra}


async def _burst(proxy, n: int) -> list[str]:
    """``n`` requests at once, pinned to shanghai; each answer's X-Suanli-Voucher."""
    async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0) as client:

        async def one(i: int) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="shanghai/deepseek-flash", max_tokens=5,
                messages=[{"role": "user", "content": f"第{i}个问题：套餐每天重置吗？"}],
            )
            return raw.headers["x-suanli-voucher"]

        return await asyncio.gather(*(one(i) for i in range(n)))


def _paid(rows, day: str) -> float:
    return sum(r.voucher_units for r in rows if r.voucher_id == f"sh-pkg@{day}")


def test_a_daily_package_resets_at_local_midnight_and_reports_what_was_lost(
    tmp_path: Path, capsys, ledger_opts: dict
):
    package = _voucher(kind="tokens", amount=200, period="day")
    config = small_config(tmp_path, vouchers=[package], **ledger_opts)
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(config, clock=clock) as proxy:
        first = asyncio.run(_burst(proxy, 20))  # ~20 x 25 tokens: more than the day's 200
        assert "sh-pkg@2026-12-01" in first and "none" in first
        clock.set(MIDNIGHT + timedelta(seconds=30))  # no restart: the next day's package pays
        second = asyncio.run(_burst(proxy, 2))
        rows = read(proxy, lambda r: r.ledger.usage())
        url = proxy.config.ledger.url
    assert second == ["sh-pkg@2026-12-02"] * 2
    assert _paid(rows, "2026-12-01") == pytest.approx(200.0)  # the whole day's amount, never more
    used_second = _paid(rows, "2026-12-02")
    assert 0 < used_second < 200
    cli = tmp_path / "cli.yaml"
    cli.write_text(yaml.safe_dump({"ledger": {"url": url}, "vouchers": [_voucher(kind="tokens", amount=200,
                                   period="day")], "regions": [r.model_dump(mode="json", exclude_none=True)
                                                               for r in config.regions]}))
    capsys.readouterr()
    window = ["--since", "2026-12-01T00:00:00+08:00", "--until", "2026-12-03T00:00:00+08:00"]
    assert main(["report", "--config", str(cli), *window, "--format", "json"]) == 0
    lost = {row["period"]: row["lost"] for row in json.loads(capsys.readouterr().out)["packages_lost"]}
    assert lost == pytest.approx({"2026-12-01": 0.0, "2026-12-02": 200 - used_second})
    assert main(["report", "--config", str(cli), *window]) == 0
    assert "lost" in capsys.readouterr().out


def test_concurrent_requests_never_pass_a_daily_cap(tmp_path: Path, ledger_opts: dict):
    cap = 0.0003  # yuan a day, of a credit voucher worth far more
    capped = _voucher(kind="credit", amount=1.0, daily_cap=cap)
    config = small_config(tmp_path, vouchers=[capped], **ledger_opts)
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(config, clock=clock) as proxy:
        first = asyncio.run(_burst(proxy, 40))
        clock.set(MIDNIGHT + timedelta(seconds=30))
        second = asyncio.run(_burst(proxy, 3))
        rows = read(proxy, lambda r: r.ledger.usage())
    day1 = [r for r in rows if r.time < MIDNIGHT]
    paid1 = sum(r.voucher_units for r in day1)
    assert 0 < paid1 <= cap + 1e-12 and "none" in first  # the cap ran out; cash paid the rest
    assert sum(r.voucher_units for r in rows if r.time >= MIDNIGHT) > 0 and "sh-pkg" in second
