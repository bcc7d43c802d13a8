"""Packages and caps as the planner sees them: one plain voucher per instance, folded back by voucher."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from suanli.config import load_config
from suanli.optimizer import Job, Plan
from suanli.optimizer.hindsight import cacheable
from suanli.optimizer.packages import expand_packages, fold_packages
from suanli.optimizer.snapshot import Flow

TZ = ZoneInfo("Asia/Shanghai")


def _s(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def _config(**voucher: object) -> object:
    base = {"id": "v", "region": "a", "kind": "tokens", "amount": 1000,
            "valid_from": "2026-11-20T00:00:00+08:00", "expires": "2027-02-01T00:00:00+08:00"}
    base.update(voucher)
    region = {"id": "a", "zone": "east", "provider": "sim",
              "models": [{"name": "m", "price": {"input": 2, "output": 8, "cached_input": 0.2},
                          "cache_ttl_s": 300}]}
    plain = {k: v for k, v in base.items() if k not in ("period", "daily_cap")}
    return load_config({"regions": [region], "vouchers": [base, {**plain, "id": "plain"}]})


def test_a_monthly_package_is_one_voucher_per_month_in_the_horizon():
    config = _config(period="month")
    start, end = _s("2026-11-30T12:00:00"), _s("2026-12-02T00:00:00")
    expanded, balances = expand_packages(config, start, end, {"v": 400.0, "plain": 900.0})
    got = {v.id: (v.valid_from.timestamp(), v.expires.timestamp(), v.amount) for v in expanded.vouchers}
    nov, dec = f"v@{start:.0f}", f"v@{_s('2026-12-01T00:00:00'):.0f}"
    assert got[nov] == (start, _s("2026-12-01T00:00:00"), 400.0)  # what is left of November's
    assert got[dec] == (_s("2026-12-01T00:00:00"), end, 1000.0)  # December's holds the amount afresh
    assert got["plain"][2] == 1000 and balances == {"plain": 900.0, nov: 400.0, dec: 1000.0}


def test_a_capped_voucher_is_one_voucher_per_day_holding_at_most_the_cap():
    config = _config(daily_cap=300)
    start, end = _s("2026-12-01T20:00:00"), _s("2026-12-03T06:00:00")
    _, balances = expand_packages(config, start, end, {"v": 1000.0})
    assert sorted(balances.values()) == [300.0, 300.0, 300.0]  # three days (the plain voucher: none given)


def test_fold_names_instances_by_their_voucher_at_a_time():
    config = _config(period="day")
    start, end = _s("2026-12-01T20:00:00"), _s("2026-12-02T20:00:00")
    expanded, _ = expand_packages(config, start, end, {})
    first, second = (v.id for v in expanded.vouchers if v.id.startswith("v@"))
    prices = {first: 0.1, second: 0.7, "plain": 0.3}
    plan = Plan(edges=(start, end), voucher_price=prices, token_price={}, request_price={},
                interactive_tpm={}, interactive_rpm={}, cash_yuan=0.0, unserved_requests=0.0,
                flows=(Flow(0, "a", 0, second, 1.0),))
    assert fold_packages(plan, config, start).voucher_price == {"v": 0.1, "plain": 0.3}
    folded = fold_packages(plan, config, _s("2026-12-02T01:00:00"))
    assert folded.voucher_price["v"] == 0.7 and folded.flows[0].voucher == "v"


def _job(i: int, t: float, *, cached: float = 0.0, latest: float | None = None, session: str = "s") -> Job:
    return Job(i, t, latest if latest is not None else t, "m", "interactive", "east", 1000, 100,
               session=session, cached=cached)


@pytest.mark.parametrize(("jobs", "kept"), [
    ([_job(0, 0.0), _job(1, 300.0, cached=500)], [0, 500]),  # the TTL's edge: possible
    ([_job(0, 0.0), _job(1, 300.5, cached=500)], [0, 0]),  # past it: never a hit
    ([_job(0, 0.0, latest=1000.0), _job(1, 1200.0, cached=500)], [0, 500]),  # the first may start late
    ([_job(0, 0.0), _job(1, 100.0, cached=500, session="t")], [0, 0]),  # alone in its session
])
def test_cacheable_keeps_cached_tokens_only_where_a_hit_is_possible(jobs, kept):
    assert [j.cached for j in cacheable(_config(), jobs)] == kept
