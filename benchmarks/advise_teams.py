"""``suanli advise`` on three synthetic teams: a startup (3,000 yuan a month), a mid-size team
(30,000) and a large one (300,000), on the bundled catalog and programmes.

    .venv/bin/python benchmarks/advise_teams.py [--json FILE]

Each team sends the same mix (60% interactive chat from the east, 40% batch work with a day's
deadline, deepseek-flash, 1,500/400 and 3,000/800 reference tokens), spread over the office
day. A sample day of ``--sample`` requests is replayed by ``simulate`` on the catalog without its
trial vouchers (a team without vouchers yet) and without per-minute limits (the large team's
day would not fit the catalog's demo limits; capacity is not what this table is about), and
each request stands for k of the team's, k chosen so that the day costs the monthly spend / 30.
Thirty such days, each request's tokens and cost times k, are the ledger rows ``advise``
projects; each programme's voucher is valued on the sample (its cap divided by k, the saving
times k). Spend thresholds are compared with the spend *at the programme's city*.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from suanli.config import Config, load_catalog  # noqa: E402
from suanli.config.programmes import load_programmes  # noqa: E402
from suanli.router.ledger.types import UsageRow  # noqa: E402
from suanli.router.ops.advice_cli import advice_table  # noqa: E402
from suanli.router.ops.advise import TeamFacts, advise  # noqa: E402
from suanli.router.ops.scenarios import programme_voucher  # noqa: E402
from suanli.router.ops.valuation import value_voucher  # noqa: E402
from suanli.router.ops.whatif import Scenario, replay_scenario  # noqa: E402
from suanli.router.simulate.trace import parse_trace  # noqa: E402

# name, yuan a month, and what the ledger cannot say (synthetic: people, prior-year revenue in yuan)
TEAMS = (
    ("startup", 3_000.0, TeamFacts(team_size=6, revenue_yuan=400_000.0)),
    ("mid-size", 30_000.0, TeamFacts(team_size=25, revenue_yuan=3_000_000.0)),
    ("large", 300_000.0, TeamFacts(team_size=300, revenue_yuan=200_000_000.0)),
)
START = datetime.fromisoformat("2026-11-02T00:00:00+08:00")
DAYS = 30


def sample_day(n: int, start: datetime) -> list[str]:
    """``n`` requests over 08:00-20:00 local, the mix of the module docstring."""
    lines = [json.dumps({"trace": "suanli/v1", "start": start.isoformat()})]
    for i in range(n):
        t = 8 * 3600 + 12 * 3600 * (i + 0.5) / n
        if i % 5 < 3:
            line = {
                "t": round(t, 3),
                "model": "deepseek-flash",
                "class": "interactive",
                "origin": "east",
                "input": 1500,
                "output": 400,
            }
        else:
            line = {
                "t": round(t, 3),
                "model": "deepseek-flash",
                "class": "batch",
                "origin": "east",
                "input": 3000,
                "output": 800,
                "deadline_s": 86400,
            }
        lines.append(json.dumps(line))
    return lines


def team_rows(config: Config, lines: list[str], k: float) -> list[UsageRow]:
    """Thirty days of the sample's replayed decisions, each standing for k requests."""
    trace = parse_trace(lines, config)
    from suanli.router.simulate.engine import replay

    result = replay(config, trace, "optimizer")
    rows = []
    for day in range(DAYS):
        for d in result.decisions:
            if d.region is None:
                continue
            job = trace.jobs[d.i]
            at = datetime.fromtimestamp(job.arrival_s, UTC) + timedelta(days=day)
            prompt, completion = round(job.input_tokens * k), round(job.output_tokens * k)
            rows.append(
                UsageRow(
                    id=len(rows) + 1,
                    request_id=f"r{len(rows)}",
                    time=at,
                    key_id=None,
                    region=d.region,
                    model=job.model,
                    work_class=job.work_class,
                    origin=job.origin,
                    voucher_id=None,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    tokens=prompt + completion,
                    cost_yuan=d.cash_yuan * k,
                    cash_yuan=d.cash_yuan * k,
                    voucher_units=0.0,
                    voucher_yuan=0.0,
                    latency_ms=0.0,
                    ttft_ms=None,
                    attempts=1,
                    status=200,
                )
            )
    return rows


def run_team(
    name: str, monthly: float, facts: TeamFacts, *, sample: int, with_value: bool
) -> tuple[list, dict]:
    catalog = load_catalog(environ={"SUANLI_LEDGER_URL": "sqlite:///:memory:", "HOME": "/tmp"})
    # no trial vouchers (a team without vouchers yet) and no per-minute limits (module docstring)
    unlimited = tuple(
        r.model_copy(update={"limits": r.limits.model_copy(update={"rpm": None, "tpm": None})})
        for r in catalog.regions
    )
    config = catalog.model_copy(update={"vouchers": (), "regions": unlimited})
    lines = sample_day(sample, START)
    one = replay_scenario(config, lines, [None] * sample, Scenario(name="probe")).cash_yuan
    k = (monthly / DAYS) / one
    rows = team_rows(config, lines, k)
    programmes = load_programmes()
    valued = {}

    def value(programme):  # noqa: ANN001, ANN202
        try:
            voucher = programme_voucher(programme, config, START, START + timedelta(days=365))
        except ValueError:
            return None
        voucher = voucher.model_copy(update={"amount": voucher.amount / k})
        found = value_voucher(config, lines, voucher, span_s=86400.0, base_cash_yuan=one, shadow=False)
        valued[programme.id] = found.saved_yuan * k
        return found.saved_yuan * k

    until = START + timedelta(days=DAYS)
    advice = advise(
        config, programmes, rows, since=START, until=until, team=facts, value=value if with_value else None
    )
    spent = math.fsum(r.cost_yuan for r in rows)
    return advice, {
        "team": name,
        "monthly_yuan": monthly,
        "k": round(k, 3),
        "spend_30d_yuan": round(spent, 2),
    }


SUMMARY = ("guiyang-compute", "wuhan-municipal", "qingyang-compute", "shanghai-model-2025")


def summary_table(figures: dict):  # noqa: ANN201 - a rich Table
    """One row per team: for the programmes with a threshold (and Shanghai's model vouchers),
    whether it qualifies now, the gap, and the voucher's value a year."""
    from rich.table import Table

    table = Table(
        title="suanli advise on three synthetic teams:"
        " qualifies / gap / cash a year to close it / value a year (yuan)"
    )
    table.add_column("team")
    table.add_column("spend /month", justify="right")
    for name in SUMMARY:
        table.add_column(name, justify="right")
    for team, row in figures.items():
        cells = []
        by = {p["programme"]: p for p in row["programmes"]}
        for name in SUMMARY:
            p = by[name]
            value = "-" if p["value_yuan"] is None else f"{p['value_yuan']:,.0f}"
            close = "-" if p["close_cost_yuan"] is None else f"+{p['close_cost_yuan']:,.0f}"
            cells.append(f"{p['qualifies']} / {p['gap_yuan']:,.0f} / {close} / {value}")
        table.add_row(team, f"{row['monthly_yuan']:,.0f}", *cells)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=600, help="requests in the replayed sample day")
    parser.add_argument("--no-value", action="store_true", help="skip valuing each programme's voucher")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    console = Console(width=220)
    figures = {}
    for name, monthly, facts in TEAMS:
        with console.status(f"{name}: replaying a sample day and valuing each programme's voucher"):
            advice, head = run_team(name, monthly, facts, sample=args.sample, with_value=not args.no_value)
        title = (
            f"{name}: {monthly:,.0f} yuan a month (30 days: {head['spend_30d_yuan']:,.0f}), {facts.team_size}"
            f" people, {facts.revenue_yuan:,.0f} yuan revenue last year;"
            f" each sampled request stands for {head['k']:,.1f}"
        )
        console.print(advice_table(advice, title=title))
        figures[name] = {**head, "programmes": [replace(a).as_json() for a in advice]}
    console.print(summary_table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
