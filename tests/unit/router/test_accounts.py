"""Accounts: the public hold, settle and release the Router's request path and the workloads share."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from suanli.config import load_config
from suanli.optimizer import Ask, State, rank
from suanli.providers import Usage
from suanli.router.core.accounts import Accounts
from suanli.router.core.context import RequestContext
from suanli.router.core.metrics import MetricsBook
from suanli.router.core.planning import Replanner
from suanli.router.core.results import Routing

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
TOKENS = 1_000_000


def _accounts(tmp_path: Path) -> Accounts:
    config = load_config({
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "regions": [{"id": "wuhan", "zone": "east", "provider": "sim", "capabilities": ["chat", "batch"],
                     "models": [{"name": "m", "price": {"input": 2.0, "output": 8.0}}]}],
        "vouchers": [{"id": "v", "region": "wuhan", "kind": "tokens", "amount": TOKENS,
                      "valid_from": "2026-11-01T00:00:00+08:00", "expires": "2027-01-01T00:00:00+08:00"}],
    })
    planning = Replanner(config, clock=lambda: NOW, balances=dict)
    return Accounts(config, clock=lambda: NOW, planning=planning, metrics=MetricsBook())


async def _held(accounts: Accounts, request_id: str):
    ask = Ask("m", "batch", "east", 1000, 500)
    option = rank(accounts.config, ask, State(balances=accounts.balances()), NOW)[0]
    hold = await accounts.reserve(request_id, option, ask, RequestContext())
    assert hold is not None and hold.voucher_id == "v"
    return hold, option, ask


async def test_a_released_hold_frees_its_voucher_units_and_leaves_nothing_pending(tmp_path: Path):
    accounts = _accounts(tmp_path)
    await accounts.open()
    try:
        hold, _, _ = await _held(accounts, "job-1")
        assert accounts.balances()["v"] == TOKENS - hold.voucher_units
        assert accounts.ledger.blocking.pending_holds() == 1
        await accounts.release(hold)
        assert accounts.balances()["v"] == TOKENS
        assert accounts.ledger.blocking.pending_holds() == 0
    finally:
        await accounts.close()


async def test_settle_debits_the_reported_usage_and_returns_the_rest_once(tmp_path: Path):
    accounts = _accounts(tmp_path)
    await accounts.open()
    try:
        hold, option, ask = await _held(accounts, "req-1")
        routing = Routing(request_id="req-1", region="wuhan", model="m", work_class="batch", origin="east",
                          voucher=hold.voucher_id, cash_yuan=0.0, cost_yuan=0.0)
        usage = Usage(900, 300, reported=True)
        for _ in range(2):  # the second settle of a settled routing does nothing
            await accounts.settle(hold, option, ask, usage, routing, latency_s=0.1, ttft_s=0.05)
        assert routing.settled and (routing.prompt_tokens, routing.completion_tokens) == (900, 300)
        assert accounts.balances()["v"] == TOKENS - 1200
        assert [row.tokens for row in accounts.ledger.blocking.usage()] == [1200]
    finally:
        await accounts.close()


def test_the_ledger_before_open_says_the_router_is_not_started(tmp_path: Path):
    accounts = _accounts(tmp_path)
    assert not accounts.is_open
    with pytest.raises(RuntimeError, match="not started"):
        accounts.ledger  # noqa: B018


async def test_units_promised_to_booked_work_are_not_free_until_it_runs(tmp_path: Path):
    accounts = _accounts(tmp_path)
    await accounts.open()
    try:
        accounts.promise("batch_1-0", "v", TOKENS - 1000)
        accounts.promise("batch_1-1", "v", 600)
        accounts.promise("batch_1-1", "v", 600)  # a promise is made once per line
        assert accounts.free()["v"] == pytest.approx(400)
        assert accounts.balances()["v"] == pytest.approx(400)  # what the planner reads
        # what is left is too little for a request of 1,500 tokens to draw whole on the voucher
        ask = Ask("m", "batch", "east", 1000, 500)
        option = rank(accounts.config, ask, State(balances=accounts.free()), NOW)[0]
        assert option.charge.voucher_units == pytest.approx(400)
        accounts.release_promise("batch_1-1")  # the line runs: its units are its own again
        assert accounts.free()["v"] == pytest.approx(1000)
        accounts.release_promises("batch_1-")  # the batch closed
        assert accounts.free()["v"] == pytest.approx(TOKENS)
        assert accounts.free() is accounts.available  # no promise left: no copy on the request path
    finally:
        await accounts.close()
