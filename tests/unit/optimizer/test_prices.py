"""A plan's prices laid out for the chooser: what ``prepare_prices`` keeps, and when."""

from __future__ import annotations

from suanli.optimizer import Plan
from suanli.optimizer.prices import prepare_prices, prices_for
from tests.unit.optimizer.tiny import make_config, region

CONFIG = make_config(
    [
        region("a", "east", limits={"tpm": 10000, "rpm": 100}),
        region("b", "east", limits={"tpm": 10000, "rpm": 100}),
        region("c", "west"),
    ]
)


def _plan() -> Plan:
    return Plan(
        edges=(0.0, 3600.0, 7200.0),
        voucher_price={},
        token_price={"a": (1e-6, 0.0), "b": (2e-6, 3e-6)},
        request_price={"a": (0.0, 0.01)},
        interactive_tpm={"a": (600.0, 0.0), "b": (900.0, 900.0)},
        interactive_rpm={"a": (3.0, 0.0), "b": (3.0, 3.0)},
        cash_yuan=0.0,
        unserved_requests=0.0,
        deferred_tpm={"b": (0.0, 1000.0)},  # slot 1: more than 5% of b's tpm may wait
    )


def test_prices_per_region_and_slot() -> None:
    prices = prepare_prices(CONFIG, _plan())
    assert set(prices.regions) == {"a", "b"}  # c is priced nowhere
    a0, a1 = prices.regions["a"]
    assert (a0.token_price, a0.request_price, a0.inflow) == (1e-6, 0.0, (600.0, 3.0, 200.0))
    assert (a1.token_price, a1.request_price, a1.inflow) == (0.0, 0.01, None)  # no interactive planned
    b0, b1 = prices.regions["b"]
    assert b0.inflow == (900.0, 3.0, 300.0)
    assert b1.inflow is None  # work that may wait could take the room: full price


def test_prepared_once_and_lazily() -> None:
    plan = _plan()
    prepared = prepare_prices(CONFIG, plan)
    assert prices_for(CONFIG, plan) is prepared
    other = _plan()  # equal, but not prepared: prepared on first use
    lazy = prices_for(CONFIG, other)
    assert lazy is not prepared and lazy.plan is other and lazy.regions == prepared.regions
    assert prices_for(CONFIG, other) is lazy
