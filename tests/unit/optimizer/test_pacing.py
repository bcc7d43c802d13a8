"""Pacing expiring vouchers (``optimizer.pacing``): behind its pace a voucher gets cheaper."""

from __future__ import annotations

from datetime import datetime, timedelta

from suanli.config import Voucher
from suanli.optimizer.pacing import Pacer

T0 = datetime.fromisoformat("2026-12-01T00:00:00+08:00")
NOW = T0.timestamp()
END = NOW + 86400.0


def _voucher(vid: str, *, opens_h: float = -1.0, expires_h: float = 3.0) -> Voucher:
    return Voucher(
        id=vid,
        region="r",
        kind="tokens",
        amount=1000.0,
        valid_from=T0 + timedelta(hours=opens_h),
        expires=T0 + timedelta(hours=expires_h),
    )


def _steps(pacer: Pacer, draws: dict[str, float], *, n: int = 12, price: float = 1e-6) -> None:
    free = {v: 1000.0 for v in pacer.vouchers}
    for k in range(n):
        pacer.step(NOW + 300.0 * k, free, END, dict.fromkeys(free, price))
        free = {v: b - draws.get(v, 0.0) for v, b in free.items()}


def test_a_voucher_drawn_behind_its_pace_gets_cheaper_and_one_on_pace_does_not() -> None:
    pacer = Pacer([_voucher("idle"), _voucher("busy")])
    # 1000 units over 3 h is ~28 per 5 minutes: "busy" is drawn at 40
    _steps(pacer, {"busy": 40.0})
    assert pacer.multiplier["idle"] < 0.2
    assert pacer.multiplier["busy"] == 1.0


def test_the_multiplier_scales_the_plan_price() -> None:
    from suanli.optimizer.snapshot import Plan

    pacer = Pacer([_voucher("idle")])
    _steps(pacer, {})
    plan = Plan(
        edges=(NOW, END),
        voucher_price={"idle": 2.0},
        token_price={},
        request_price={},
        interactive_tpm={},
        interactive_rpm={},
        cash_yuan=0.0,
        unserved_requests=0.0,
    )
    assert pacer.apply(plan).voucher_price["idle"] == 2.0 * pacer.multiplier["idle"]


def test_untouched_when_priced_at_zero_not_yet_valid_or_valid_past_the_known_demand() -> None:
    pacer = Pacer([_voucher("free"), _voucher("later", opens_h=10.0), _voucher("long", expires_h=48.0)])
    _steps(pacer, {}, price=0.0)
    assert pacer.multiplier == {}
    _steps(pacer, {})
    assert "later" not in pacer.multiplier
    assert "long" not in pacer.multiplier


def test_only_the_last_hours_of_a_voucher_are_paced() -> None:
    pacer = Pacer([_voucher("early", expires_h=12.0)])
    _steps(pacer, {})  # the first hour of twelve: a slow draw is the shape of the day
    assert "early" not in pacer.multiplier
