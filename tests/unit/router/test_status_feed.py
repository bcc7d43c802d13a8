"""The status feed over a real ledger: today's boundary, day rollover, the greedy replay."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement
from suanli.router.status.feed import UsageFeed
from tests.harness import small_config

SHANGHAI = ZoneInfo("Asia/Shanghai")


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _serve(
    ledger: Ledger, clock: _Clock, at: datetime, *, region: str = "shanghai", cash: float = 0.01
) -> None:
    """One request served in cash at ``region`` (1,000 prompt + 500 completion tokens)."""
    clock.at = at
    hold = ledger.reserve(
        HoldRequest(
            request_id=f"r-{at.timestamp()}",
            region=region,
            model="deepseek-flash",
            work_class="interactive",
            origin="east",
            voucher_id=None,
            voucher_units=0,
        )
    )
    ledger.settle(
        hold.id,
        Settlement(
            prompt_tokens=1000,
            completion_tokens=500,
            tokens=1500,
            cost_yuan=cash,
            cash_yuan=cash,
            voucher_units=0.0,
            voucher_yuan=0.0,
            latency_ms=300.0,
            ttft_ms=100.0,
        ),
    )


@pytest.fixture
def book(tmp_path: Path):
    config = small_config(tmp_path)
    clock = _Clock(datetime(2026, 12, 1, 12, 0, tzinfo=SHANGHAI))
    ledger = Ledger.open(config.ledger.url, config.vouchers, clock=clock)
    yield config, ledger, clock
    ledger.close()


def test_today_starts_at_local_midnight(book):
    config, ledger, clock = book
    _serve(ledger, clock, datetime(2026, 11, 30, 23, 30, tzinfo=SHANGHAI))
    _serve(ledger, clock, datetime(2026, 12, 1, 0, 30, tzinfo=SHANGHAI))
    feed = UsageFeed(config)
    feed.refresh(ledger, datetime(2026, 12, 1, 1, 0, tzinfo=SHANGHAI))
    assert feed.today.requests == 1
    assert sum(feed.minute_cash.values()) == pytest.approx(0.02)  # both stay in the spend history
    assert len(feed.recent) == 2


def test_a_new_local_day_starts_from_zero(book):
    config, ledger, clock = book
    feed = UsageFeed(config)
    _serve(ledger, clock, datetime(2026, 12, 1, 23, 50, tzinfo=SHANGHAI))
    feed.refresh(ledger, datetime(2026, 12, 1, 23, 55, tzinfo=SHANGHAI))
    assert feed.today.requests == 1
    _serve(ledger, clock, datetime(2026, 12, 2, 0, 5, tzinfo=SHANGHAI))
    _serve(ledger, clock, datetime(2026, 12, 2, 0, 6, tzinfo=SHANGHAI))
    feed.refresh(ledger, datetime(2026, 12, 2, 0, 10, tzinfo=SHANGHAI))
    assert feed.today.requests == 2
    assert feed.today.cash_yuan == pytest.approx(0.02)
    assert feed.refresh(ledger, datetime(2026, 12, 2, 0, 11, tzinfo=SHANGHAI)) == 0  # nothing read twice
    assert feed.today.requests == 2


def test_greedy_replays_rows_on_its_own_balances(book):
    config, ledger, clock = book
    for minute in range(3):
        _serve(ledger, clock, datetime(2026, 12, 1, 9, minute, tzinfo=SHANGHAI))
    feed = UsageFeed(config)
    feed.refresh(ledger, datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI))
    # Greedy sends each to wuhan on its token voucher (1,500 of 100,000 tokens): no cash.
    assert feed.today.greedy_cash_yuan == pytest.approx(0.0, abs=1e-12)
    assert feed.today.cash_yuan == pytest.approx(0.03)
    # List price at shanghai: 1,000 x 2.0 + 500 x 8.0 yuan per million tokens.
    assert feed.today.list_yuan == pytest.approx(3 * 0.006)


def test_the_first_refresh_replays_only_the_most_recent_rows(book):
    config, ledger, clock = book
    for minute in range(3):
        _serve(ledger, clock, datetime(2026, 12, 1, 9, minute, tzinfo=SHANGHAI))
    feed = UsageFeed(config, greedy_backfill=1)
    feed.refresh(ledger, datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI))
    assert feed.today.greedy_cash_yuan == pytest.approx(0.02)  # two counted as served, one replayed
    _serve(ledger, clock, datetime(2026, 12, 1, 10, 1, tzinfo=SHANGHAI))
    feed.refresh(ledger, datetime(2026, 12, 1, 10, 2, tzinfo=SHANGHAI))
    assert feed.today.greedy_cash_yuan == pytest.approx(0.02)  # new rows are always replayed


def test_spend_rate_compares_the_last_hour_with_the_day_before(book):
    config, ledger, clock = book
    now = datetime(2026, 12, 1, 12, 0, tzinfo=SHANGHAI)
    _serve(ledger, clock, now - timedelta(hours=5), cash=0.24)
    _serve(ledger, clock, now - timedelta(minutes=10), cash=0.05)
    feed = UsageFeed(config)
    feed.refresh(ledger, now)
    last, usual = feed.usual_hourly_cash(now.timestamp())
    assert last == pytest.approx(0.05)
    assert usual == pytest.approx(0.01)


def test_voucher_units_greedy_would_have_spent_count_as_kept(book):
    """Suanli paid cash where greedy drew wuhan's token voucher: the units are still on the
    voucher, worth what greedy drew from each; once the voucher has expired they are worth nothing."""
    config, ledger, clock = book
    for minute in range(3):
        _serve(ledger, clock, datetime(2026, 12, 1, 9, minute, tzinfo=SHANGHAI))
    feed = UsageFeed(config)
    now = datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI)
    feed.refresh(ledger, now)
    units, yuan = feed.today.greedy_drawn["wuhan-tokens"]
    assert units == pytest.approx(3 * 1500) and yuan > 0
    assert feed.vouchers_kept_vs_greedy(now.timestamp()) == pytest.approx(yuan)
    assert yuan == pytest.approx(3 * (1000 * 1.8 + 500 * 7.2) / 1e6)  # wuhan's list price of the tokens
    wuhan = next(v for v in config.vouchers if v.id == "wuhan-tokens")
    assert feed.vouchers_kept_vs_greedy(wuhan.expires.timestamp() + 1) == 0.0
