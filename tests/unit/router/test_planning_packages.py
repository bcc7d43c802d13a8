"""The live re-planner prices a package per period, as the replay does (``packages.expand_packages``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from suanli.config import load_config
from suanli.optimizer import Ask
from suanli.router.core.planning import Replanner
from tests.harness import small_config
from tests.unit.router.test_planning import Clock, Recorder, wait_for

# 10:00 on the 31st, local: the planner's horizon holds the month's last hours and January's first
T0 = datetime(2026, 12, 31, 2, 0, tzinfo=UTC)
JAN_1 = datetime(2027, 1, 1, tzinfo=UTC).timestamp() - 8 * 3600  # 00:00 local (UTC+8)


def _monthly(tmp_path) -> object:  # noqa: ANN001
    data = small_config(tmp_path).model_dump(mode="json", exclude_none=True, by_alias=True)
    for voucher in data["vouchers"]:
        if voucher["id"] == "wuhan-tokens":
            voucher["period"] = "month"  # 100,000 tokens afresh each month
    return load_config(data)


@pytest.mark.timeout(20)
def test_a_monthly_package_is_planned_as_this_months_balance_and_next_months_amount(tmp_path):
    config = _monthly(tmp_path)
    clock, solve = Clock(), Recorder()
    clock.now = T0
    balances = {"wuhan-tokens": 2_500.0, "shanghai-credit": 0.5}  # what the month has left
    planner = Replanner(config, clock=clock, balances=lambda: balances, blocked=frozenset, solve=solve,
                        poll_s=0.02, min_gap_s=0.0)
    planner.start()
    try:
        assert wait_for(lambda: planner.info()["plans"] == 1)
        batch = Ask(model="deepseek-flash", work_class="batch", origin="east", input_tokens=2000,
                    output_tokens=500)
        for _ in range(30):  # batch work at a pace that wants more than the month has left
            planner.served(batch, region="wuhan", prompt_tokens=2000, completion_tokens=500, reported=True,
                           at=clock.now)
        clock.now = T0 + timedelta(seconds=60)
        assert wait_for(lambda: planner.info()["plans"] == 2)
        snapshot = solve.snapshots[-1]
        packs = {v.id: v for v in snapshot.config.vouchers if v.id.startswith("wuhan-tokens@")}
        assert len(packs) == 2  # December's rest and January's first hours
        now_id = min(packs, key=lambda i: packs[i].valid_from)
        next_id = max(packs, key=lambda i: packs[i].valid_from)
        assert snapshot.balances[now_id] == pytest.approx(2_500.0)  # only what is left now
        assert snapshot.balances[next_id] == pytest.approx(100_000.0)  # January's fresh amount
        assert packs[now_id].expires.timestamp() == pytest.approx(JAN_1)
        assert packs[next_id].valid_from.timestamp() == pytest.approx(JAN_1)
        # the chooser knows config vouchers: the plan names them so, at the current period's price
        plan = planner.plan
        assert plan is not None and "wuhan-tokens" in plan.voucher_price
        assert not any("@" in v for v in plan.voucher_price)
        paid = {f.voucher for f in plan.flows if f.voucher is not None}
        assert "wuhan-tokens" in paid and not any("@" in v for v in paid)
    finally:
        planner.stop()
