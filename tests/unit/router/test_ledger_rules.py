"""The ledger's money rules that the SQLite and the PostgreSQL driver both call (``router/ledger/rules.py``).

Fixed point per voucher kind, what a hold takes, settle's clamp and the cash split it makes,
and the usage row's values in chain order. Yuan amounts are floats: compared with tolerances.
"""

from __future__ import annotations

import logging

import pytest

from suanli.router.errors import LedgerError
from suanli.router.ledger.chain import HASHED_COLUMNS
from suanli.router.ledger.rules import (
    MAX_UNITS_Q,
    TOKEN_SCALE,
    YUAN_SCALE,
    amount_q,
    available,
    budget_hold_q,
    clamped,
    debit,
    hold_q,
    not_pending,
    scale_of,
    to_q,
)
from suanli.router.ledger.types import Settlement
from suanli.router.ledger.usage import usage_values


def settlement(units: float, *, cost_yuan: float = 0.5, voucher_yuan: float = 0.4) -> Settlement:
    return Settlement(prompt_tokens=900, completion_tokens=300, tokens=1200, cost_yuan=cost_yuan,
                      cash_yuan=cost_yuan - voucher_yuan, voucher_units=units, voucher_yuan=voucher_yuan,
                      latency_ms=420.0, ttft_ms=180.0)


@pytest.mark.parametrize(("kind", "scale"), [("tokens", 10**6), ("credit", 10**9), ("discount", 10**9)])
def test_tokens_count_in_micro_tokens_and_credit_and_discount_in_nano_yuan(kind: str, scale: int) -> None:
    assert scale_of(kind) == scale
    assert (TOKEN_SCALE, YUAN_SCALE) == (10**6, 10**9)


def test_fixed_point_rounds_to_the_nearest_step_and_clamps_at_zero() -> None:
    assert to_q(1300.0000004, TOKEN_SCALE) == 1_300_000_000
    assert to_q(0.25, YUAN_SCALE) == 250_000_000
    assert to_q(1.2345678915, YUAN_SCALE) == 1_234_567_892
    assert to_q(0.0000004, TOKEN_SCALE) == 0
    assert to_q(-3.0, TOKEN_SCALE) == 0
    assert to_q(-0.01, YUAN_SCALE) == 0


def test_a_new_voucher_amount_must_fit_the_ledgers_integers() -> None:
    assert amount_q("q", 10.0, scale_of("credit")) == 10 * YUAN_SCALE
    assert amount_q("t", 30_000_000, scale_of("tokens")) == 30_000_000 * TOKEN_SCALE
    with pytest.raises(ValueError, match="too large"):
        amount_q("huge", MAX_UNITS_Q / TOKEN_SCALE * 2, TOKEN_SCALE)


def test_a_hold_takes_what_was_asked_or_what_is_left() -> None:
    assert hold_q(5_000_000, 3.0, TOKEN_SCALE) == 3_000_000
    assert hold_q(5_000_000, 2000.0, TOKEN_SCALE) == 5_000_000
    assert hold_q(5_000_000, -1.0, TOKEN_SCALE) == 0


def test_a_budget_hold_rounds_up_but_not_past_a_float_hair() -> None:
    assert budget_hold_q(0.03) == 30_000_000  # 0.03 * 1e9 is 30000000.000000004: no extra nano-yuan
    assert budget_hold_q(0.0299999999) == 30_000_000
    assert budget_hold_q(1e-10) == 1
    assert budget_hold_q(-0.5) == 0


def test_clamping_moves_the_unpaid_share_of_the_voucher_yuan_to_cash() -> None:
    s = settlement(900.0, cost_yuan=0.5, voucher_yuan=0.4)
    c = clamped(s, 699.876543)
    assert c.voucher_units == 699.876543
    assert c.voucher_yuan == pytest.approx(0.4 * 699.876543 / 900, rel=1e-12)
    assert c.cash_yuan == pytest.approx(0.5 - 0.4 * 699.876543 / 900, rel=1e-12)
    assert c.cash_yuan + c.voucher_yuan == pytest.approx(s.cost_yuan, abs=1e-12)
    assert (c.tokens, c.cost_yuan, c.latency_ms) == (s.tokens, s.cost_yuan, s.latency_ms)


def test_clamping_to_zero_makes_it_all_cash() -> None:
    c = clamped(settlement(3.0, cost_yuan=0.02, voucher_yuan=0.015), 0.0)
    assert (c.voucher_units, c.voucher_yuan) == (0.0, 0.0)
    assert c.cash_yuan == pytest.approx(0.02, abs=1e-12)


def test_a_settle_within_the_hold_debits_the_real_units() -> None:
    s = settlement(120.5)
    assert debit("h1", "wuhan-tokens", 300_000_000, TOKEN_SCALE, s) == (120_500_000, s)
    credit = settlement(0.25, cost_yuan=0.031, voucher_yuan=0.25)
    assert debit("h2", "qingyang-credit", 300_000_000, YUAN_SCALE, credit) == (250_000_000, credit)


def test_a_settle_beyond_the_hold_is_clamped_and_the_excess_paid_in_cash(caplog: pytest.LogCaptureFixture):
    held_q = 699_876_543  # micro-tokens
    with caplog.at_level(logging.ERROR, logger="router.ledger"):
        units_q, charged = debit("h1", "wuhan-tokens", held_q, TOKEN_SCALE, settlement(900.0))
    assert units_q == held_q
    assert charged.voucher_units == pytest.approx(699.876543, abs=1e-9)
    assert charged.voucher_yuan == pytest.approx(0.3110562413, abs=1e-9)
    assert charged.cash_yuan == pytest.approx(0.1889437587, abs=1e-9)
    assert "clamped, excess charged as cash" in caplog.text


def test_negative_units_debit_nothing() -> None:
    s = settlement(-1.0, cost_yuan=0.0, voucher_yuan=0.0)
    assert debit("h1", "shanghai-discount", 200_000_000, YUAN_SCALE, s) == (0, s)


def test_a_cash_only_hold_debits_nothing_and_charges_stray_units_as_cash(caplog: pytest.LogCaptureFixture):
    s = settlement(0.0, cost_yuan=0.02, voucher_yuan=0.0)
    assert debit("h1", None, 0, 1, s) == (0, s)
    with caplog.at_level(logging.ERROR, logger="router.ledger"):
        units_q, charged = debit("h2", None, 0, 1, settlement(3.0, cost_yuan=0.02, voucher_yuan=0.015))
    assert units_q == 0
    assert (charged.voucher_units, charged.voucher_yuan) == (0.0, 0.0)
    assert charged.cash_yuan == pytest.approx(0.02, abs=1e-12)
    assert "has no voucher" in caplog.text


def test_only_a_settled_hold_may_be_settled_again() -> None:
    not_pending("h1", "settled")
    with pytest.raises(LedgerError, match="unknown hold 'h2'"):
        not_pending("h2", None)
    with pytest.raises(LedgerError, match="is voided, it cannot be settled"):
        not_pending("h3", "voided")


def test_an_exhausted_voucher_is_worth_nothing_whatever_its_balance() -> None:
    rows = [
        ("wuhan-tokens", 700_000_000, TOKEN_SCALE, 0),  # SQLite says 0/1, PostgreSQL False/True
        ("qingyang-credit", 9_750_000_000, YUAN_SCALE, False),
        ("shanghai-discount", 3_333_333_300, YUAN_SCALE, True),
    ]
    assert available(rows) == pytest.approx({"wuhan-tokens": 700.0, "qingyang-credit": 9.75,
                                              "shanghai-discount": 0.0})


def test_the_usage_row_values_follow_the_hashed_columns() -> None:
    s = settlement(120.5, cost_yuan=0.0123, voucher_yuan=0.0101)
    request = ("r1", "k1", "wuhan", "deepseek-v3", "interactive", "east")
    values = usage_values(7, "h1", now=1796112001.25, request=request, voucher_id="wuhan-tokens", s=s,
                          voucher_units=120.5)
    row = dict(zip(HASHED_COLUMNS, values, strict=True))
    assert row == {
        "id": 7, "hold_id": "h1", "request_id": "r1", "time": 1796112001.25, "key_id": "k1",
        "region": "wuhan", "model": "deepseek-v3", "work_class": "interactive", "origin": "east",
        "voucher_id": "wuhan-tokens",
        "prompt_tokens": 900, "completion_tokens": 300, "tokens": 1200, "cost_yuan": 0.0123,
        "cash_yuan": pytest.approx(0.0022, abs=1e-12), "voucher_units": 120.5, "voucher_yuan": 0.0101,
        "latency_ms": 420.0, "ttft_ms": 180.0, "attempts": 1, "status": 200,
    }
