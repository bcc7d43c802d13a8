"""Spend report sums and the period parser of ``suanli report``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from suanli.router.ledger.sqlite.ledger import UsageRow
from suanli.router.ops.spend_report import parse_moment, spend_report

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 1, 4, 30, tzinfo=UTC)  # 12:30 in Shanghai


def _row(
    n: int, *, region: str, key: str | None, voucher: str | None, work_class: str, cash: float
) -> UsageRow:
    return UsageRow(
        id=n,
        request_id=f"r{n}",
        time=NOW,
        key_id=key,
        region=region,
        model="deepseek-flash",
        work_class=work_class,
        origin="east",
        voucher_id=voucher,
        prompt_tokens=100,
        completion_tokens=50,
        tokens=150,
        cost_yuan=0.01,
        cash_yuan=cash,
        voucher_units=0.0,
        voucher_yuan=0.01 - cash,
        latency_ms=300.0,
        ttft_ms=100.0,
        attempts=1,
        status=200,
    )


ROWS = [
    _row(1, region="wuhan", key="key-a", voucher="wuhan-tokens", work_class="interactive", cash=0.0),
    _row(2, region="wuhan", key="key-a", voucher="wuhan-tokens", work_class="batch", cash=0.0),
    _row(3, region="qingyang", key="key-b", voucher=None, work_class="batch", cash=0.01),
]


def test_each_dimension_sums_to_the_totals_and_most_cash_comes_first():
    report = spend_report(ROWS, since=NOW - timedelta(days=1), until=NOW, key_names={"key-a": "chatbot"})
    doc = report.as_json()
    assert doc["totals"] == {
        "requests": 3,
        "tokens": 450,
        "cost_yuan": 0.03,
        "cash_yuan": 0.01,
        "voucher_yuan": 0.02,
    }
    assert [e["region"] for e in doc["by"]["region"]] == ["qingyang", "wuhan"]
    assert doc["by"]["voucher"][0] == {
        "voucher": "cash",
        "requests": 1,
        "tokens": 150,
        "cost_yuan": 0.01,
        "cash_yuan": 0.01,
        "voucher_yuan": 0.0,
    }
    keys = {e["key"]: e for e in doc["by"]["key"]}
    assert keys["key-a"]["name"] == "chatbot" and keys["key-a"]["requests"] == 2
    assert "name" not in keys["key-b"]
    assert {e["class"]: e["requests"] for e in doc["by"]["class"]} == {"batch": 2, "interactive": 1}
    json.dumps(doc)  # JSON-ready


def test_csv_has_one_row_per_value_and_a_total():
    lines = spend_report(ROWS, since=NOW, until=NOW, by=["class"]).as_csv().splitlines()
    assert lines == [
        "dimension,value,requests,tokens,cost_yuan,cash_yuan,voucher_yuan",
        "class,batch,2,300,0.02,0.01,0.01",
        "class,interactive,1,150,0.01,0.0,0.01",
        "total,,3,450,0.03,0.01,0.02",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("90m", NOW - timedelta(minutes=90)),
        ("today", datetime(2026, 12, 1, 0, 0, tzinfo=SHANGHAI)),
        ("2026-11-01", datetime(2026, 11, 1, 0, 0, tzinfo=SHANGHAI)),
        ("2026-11-01T08:00:00+00:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_periods_are_relative_local_or_explicit(text: str, expected: datetime):
    assert parse_moment(text, now=NOW, tz=SHANGHAI) == expected


def test_a_period_that_is_not_a_time_says_what_would_be():
    with pytest.raises(ValueError, match="is not a time: use 24h, 7d, today"):
        parse_moment("last tuesday", now=NOW, tz=SHANGHAI)
