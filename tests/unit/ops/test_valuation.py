"""What a voucher is worth: near zero where the team cannot use it, the cash it displaces where it can."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from suanli.config import Voucher
from suanli.router.ops.valuation import value_voucher, voucher_from_json
from tests.harness import small_config

START = datetime.fromisoformat("2026-12-01T09:00:00+08:00")


def east_day(n: int = 120) -> list[str]:
    """Interactive chat from the east, one request a minute for two hours."""
    lines = [json.dumps({"trace": "suanli/v1", "start": START.isoformat()})]
    for i in range(n):
        lines.append(
            json.dumps(
                {
                    "t": 60.0 * i + 1,
                    "model": "deepseek-flash",
                    "class": "interactive",
                    "origin": "east",
                    "input": 2000,
                    "output": 500,
                }
            )
        )
    return lines


def config_without_vouchers(tmp_path):  # noqa: ANN001, ANN201
    return small_config(tmp_path, vouchers=[])


def test_a_voucher_for_a_region_outside_the_slo_expiring_tomorrow_is_worth_nothing(tmp_path) -> None:
    config = config_without_vouchers(tmp_path)
    voucher = Voucher(
        id="qy",
        region="qingyang",
        kind="tokens",
        amount=20_000_000,
        valid_from=START,
        expires=START + timedelta(days=1),
    )
    found = value_voucher(config, east_day(), voucher, span_s=7200.0)
    assert found.cash_without_yuan > 0
    assert found.saved_yuan == pytest.approx(0.0, abs=1e-9)
    assert found.used_units == 0 and found.used_share == 0


def test_a_voucher_matching_the_traffic_saves_the_cash_it_displaces(tmp_path) -> None:
    config = config_without_vouchers(tmp_path)
    # wuhan serves this traffic (cheapest east region in the SLO); a credit smaller than its bill
    voucher = Voucher(
        id="wh",
        region="wuhan",
        kind="credit",
        amount=0.2,
        valid_from=START,
        expires=START + timedelta(hours=2),
    )
    found = value_voucher(config, east_day(), voucher, span_s=7200.0)
    assert found.cash_without_yuan > 0.2
    assert found.used_units == pytest.approx(0.2, rel=1e-6)
    assert found.saved_yuan == pytest.approx(0.2, rel=0.02)
    assert found.average_yuan_per_unit == pytest.approx(1.0, rel=0.02)


def test_a_longer_validity_is_valued_on_the_traffic_repeated(tmp_path) -> None:
    config = config_without_vouchers(tmp_path)
    voucher = Voucher(
        id="wh",
        region="wuhan",
        kind="credit",
        amount=1000.0,
        valid_from=START,
        expires=START + timedelta(hours=20),
    )
    found = value_voucher(config, east_day(), voucher, span_s=7200.0)
    assert found.scale == pytest.approx(10.0)
    # plenty of credit: it pays the whole bill, ten spans of it, and most of it is left
    assert found.saved_yuan == pytest.approx(found.cash_without_yuan, rel=0.02)
    assert found.used_share < 0.05


def test_voucher_json_needs_an_expiry_and_defaults_its_start_to_now() -> None:
    now = datetime.fromisoformat("2026-12-01T00:00:00+08:00")
    voucher = voucher_from_json(
        {"region": "qingyang", "kind": "tokens", "amount": 5, "expires": "2026-12-02"}, now=now
    )
    assert voucher.valid_from == now and voucher.id == "value-qingyang-tokens"
    with pytest.raises(ValueError, match="expires"):
        voucher_from_json({"region": "qingyang", "kind": "tokens", "amount": 5}, now=now)


def test_a_tokens_voucher_saves_what_its_tokens_would_have_cost_there(tmp_path) -> None:
    config = config_without_vouchers(tmp_path)
    # wuhan serves all 120 requests alike (2,500 tokens each): tokens for 25 of them save 25 bills
    voucher = Voucher(
        id="wh-tokens",
        region="wuhan",
        kind="tokens",
        amount=25 * 2500,
        valid_from=START,
        expires=START + timedelta(hours=2),
    )
    found = value_voucher(config, east_day(), voucher, span_s=7200.0)
    assert found.used_units == pytest.approx(25 * 2500, rel=1e-6) and found.used_share == pytest.approx(1.0)
    assert found.saved_yuan == pytest.approx(found.cash_without_yuan * 25 / 120, rel=0.02)
    assert found.average_yuan_per_unit == pytest.approx(found.cash_without_yuan / (120 * 2500), rel=0.02)
