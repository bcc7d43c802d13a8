"""The advisor: projection with a trend, the rules as the catalog says, the gap and what closes it."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from suanli.config.programmes import load_programmes
from suanli.router.ops.advise import TeamFacts, advise, cost_to_close, project
from tests.harness import small_config
from tests.unit.ops.test_trace_export import row

TZ = ZoneInfo("Asia/Shanghai")
SINCE = datetime.fromisoformat("2026-11-01T00:00:00+08:00")


def daily(region: str, yuan_per_day: list[float], *, work_class: str = "interactive") -> list:
    rows = []
    for day, yuan in enumerate(yuan_per_day):
        r = row(len(rows) + 1, at_s=day * 86400.0 + 36000.0, region=region, work_class=work_class, cash=yuan)
        rows.append(r)
    return [
        type(r)(
            **{
                **{f: getattr(r, f) for f in r.__dataclass_fields__},
                "time": SINCE + timedelta(days=d, hours=10),
            }
        )
        for d, r in enumerate(rows)
    ]


def test_a_flat_month_projects_365_days_of_it() -> None:
    rows = daily("wuhan", [100.0] * 30)
    found = project(rows, since=SINCE, until=SINCE + timedelta(days=30), tz=TZ, by=lambda r: r.region)
    assert found["wuhan"].annual_yuan == pytest.approx(36_500.0, rel=1e-6)
    assert found["wuhan"].trend_yuan_per_day2 == pytest.approx(0.0, abs=1e-9)


def test_a_growing_month_projects_its_trend() -> None:
    rows = daily("wuhan", [10.0 * d for d in range(30)])  # 0, 10, ..., 290 yuan a day
    found = project(rows, since=SINCE, until=SINCE + timedelta(days=30), tz=TZ, by=lambda r: r.region)[
        "wuhan"
    ]
    assert found.trend_yuan_per_day2 == pytest.approx(10.0)
    assert found.per_day_yuan == pytest.approx(290.0)
    assert found.annual_yuan == pytest.approx(sum(290.0 + 10.0 * (d + 1) for d in range(365)))


def test_wuhan_takes_revenue_or_team_and_qingyang_wants_its_half_million(tmp_path) -> None:
    config = small_config(tmp_path)
    rows = daily("wuhan", [700.0] * 30) + daily("qingyang", [100.0] * 30, work_class="batch")
    until = SINCE + timedelta(days=30)
    programmes = load_programmes()
    by = {a.programme: a for a in advise(config, programmes, rows, since=SINCE, until=until)}
    assert by["wuhan-municipal"].projected_annual_spend_yuan == pytest.approx(255_500.0)
    assert by["wuhan-municipal"].qualifies == "unknown"  # spend met; revenue and team not given
    small = TeamFacts(team_size=6, revenue_yuan=400_000.0)
    by = {a.programme: a for a in advise(config, programmes, rows, since=SINCE, until=until, team=small)}
    assert by["wuhan-municipal"].qualifies == "no"
    team = TeamFacts(team_size=25)
    by = {a.programme: a for a in advise(config, programmes, rows, since=SINCE, until=until, team=team)}
    assert by["wuhan-municipal"].qualifies == "yes" and by["wuhan-municipal"].gap_yuan == 0
    qingyang = by["qingyang-compute"]
    assert qingyang.qualifies == "no"
    assert qingyang.gap_yuan == pytest.approx(500_000.0 - 36_500.0)
    assert qingyang.lead_time_weeks == "4-6" and qingyang.startup_friendly == "no"
    assert "gives.rate" in qingyang.estimates  # Qingyang's rate is our estimate, and says so
    assert by["hangzhou-compute"].qualifies == "no"  # not a region here


def test_the_cheapest_moves_close_the_gap_first() -> None:
    moves = [(100.0, 50.0), (100.0, 0.0), (100.0, 10.0)]
    assert cost_to_close(moves, 100.0) == pytest.approx(0.0)
    assert cost_to_close(moves, 150.0) == pytest.approx(5.0)
    assert cost_to_close(moves, 300.0) == pytest.approx(60.0)
    assert cost_to_close(moves, 301.0) is None
