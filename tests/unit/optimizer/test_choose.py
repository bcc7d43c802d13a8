"""The chooser on frozen plans: capacity prices by the minute, minute prices, voucher prices."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from suanli.optimizer import Ask, Plan, State, index_for, rank
from tests.unit.optimizer.tiny import START, make_config, region

T0 = datetime.fromisoformat(START).timestamp()
ASK = Ask("m", "interactive", "east", 500, 500)  # 1,000 tokens: 0.001 yuan at a, 0.002 at b
CONFIG = make_config(
    [region("a", "east", price=1.0, limits={"tpm": 10000, "rpm": 100}), region("b", "east", price=2.0)],
    [{"id": "va", "region": "a", "kind": "tokens", "amount": 100000}],
)


def _plan(**prices: object) -> Plan:
    base: dict[str, object] = {
        "edges": (T0, T0 + 3600.0),
        "voucher_price": {},
        "token_price": {},
        "request_price": {},
        "interactive_tpm": {},
        "interactive_rpm": {},
        "cash_yuan": 0.0,
        "unserved_requests": 0.0,
    }
    base.update(prices)
    return Plan(**base)  # type: ignore[arg-type]


def _first(plan: Plan, *, load: float = 0.0, balances: dict[str, float] | None = None) -> str:
    state = State(balances=balances or {}, load={"a": load} if load else {})
    return rank(CONFIG, ASK, state, datetime.fromtimestamp(T0 + 30.0), plan=plan)[0].region.id


def test_room_no_later_request_this_minute_needs_is_taken_despite_the_slot_price() -> None:
    # The plan prices a's capacity (it expects the hour full) but only 2,000 tokens a minute
    # of interactive traffic: half a minute in, with the minute empty, nothing is displaced.
    plan = _plan(token_price={"a": (1e-3,)}, interactive_tpm={"a": (2000.0,)}, interactive_rpm={"a": (2.0,)})
    assert _first(plan) == "a"


def test_a_nearly_full_minute_charges_the_full_capacity_price() -> None:
    plan = _plan(token_price={"a": (1e-3,)}, interactive_tpm={"a": (9000.0,)}, interactive_rpm={"a": (9.0,)})
    assert _first(plan, load=0.95) == "b"


def test_room_that_deferred_work_is_planned_for_keeps_its_price() -> None:
    plan = _plan(
        token_price={"a": (1e-3,)},
        interactive_tpm={"a": (2000.0,)},
        interactive_rpm={"a": (2.0,)},
        deferred_tpm={"a": (5000.0,)},
    )
    assert _first(plan) == "b"


def test_a_minute_price_from_the_plan_applies_as_it_is() -> None:
    minute = int((T0 + 30.0) // 60)
    assert _first(_plan(minute_price={("a", minute): (1e-3, 0.0)})) == "b"
    assert _first(_plan(minute_price={("a", minute + 1): (1e-3, 0.0)})) == "a"


def test_a_voucher_is_drawn_only_where_it_saves_more_than_its_shadow_price() -> None:
    # At a the voucher saves 1 yuan per million tokens; b costs 2 yuan per million in cash.
    cheap = rank(
        CONFIG,
        ASK,
        State(balances={"va": 100000}),
        datetime.fromtimestamp(T0 + 30.0),
        plan=_plan(voucher_price={"va": 0.5e-6}),
    )
    assert cheap[0].region.id == "a" and cheap[0].voucher is not None and cheap[0].charge.cash_yuan == 0.0
    dear = rank(
        CONFIG,
        ASK,
        State(balances={"va": 100000}),
        datetime.fromtimestamp(T0 + 30.0),
        plan=_plan(voucher_price={"va": 5e-6}),
    )
    assert dear[0].region.id == "a" and dear[0].voucher is None and dear[0].charge.cash_yuan == 0.001


def test_local_minute_of_day_across_a_daylight_saving_change() -> None:
    config = make_config([region("a", "east")], timezone="America/New_York")
    index = index_for(config)
    start = datetime(2026, 3, 8, 0, 0, tzinfo=UTC).timestamp()  # clocks go forward at 07:00 UTC
    for minute in range(0, 24 * 60, 7):
        at = start + minute * 60
        local = datetime.fromtimestamp(at, UTC).astimezone(ZoneInfo("America/New_York"))
        assert index.minute_of_day(at) == local.hour * 60 + local.minute
