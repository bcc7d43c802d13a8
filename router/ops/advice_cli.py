"""``suanli value`` (what a voucher is worth to the team) and ``suanli advise`` (which programmes)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from suanli.config import Config, ConfigError, Voucher, load_catalog, load_config

__all__ = ["add_parsers", "advice_table", "programme_value"]


def add_parsers(sub: Any) -> None:  # an argparse sub-parsers object (no public type)
    """Register ``value`` and ``advise`` on the ``suanli`` sub-commands."""
    value = sub.add_parser("value", help="what a voucher would save this team: replayed with and without it")
    _common(value)
    which = value.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--voucher",
        help='JSON: {"region", "kind", "amount", "expires"} (rate, models, classes, valid_from optional)',
    )
    which.add_argument("--programme", help="the voucher a programme of the catalog gives (a year of it)")
    value.set_defaults(func=_value)

    advise = sub.add_parser("advise", help="city programmes: qualifies now, gap, value, lead time")
    _common(advise)
    advise.add_argument(
        "--revenue", type=float, help="the team's prior-year revenue, yuan (for rules that ask)"
    )
    advise.add_argument("--team-size", type=int, help="people in the team (for rules that ask)")
    advise.add_argument(
        "--value-days",
        type=float,
        default=1.0,
        help="value each voucher on the period's last N days of traffic (default %(default)s)",
    )
    advise.add_argument("--no-value", action="store_true", help="skip the replays that value each voucher")
    advise.set_defaults(func=_advise)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config YAML whose ledger to read (default: the bundled catalog)")
    parser.add_argument(
        "--since", help="start: 30d, 7d, or an ISO date/time (default: 24h, advise 30d, before --until)"
    )
    parser.add_argument("--until", help="end, excluded (default: now)")
    parser.add_argument("--programmes", help="programmes catalog YAML (default: the bundled one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _config(path: str | None) -> Config:
    return load_config(path) if path else load_catalog()


def programme_value(
    programme,
    config: Config,
    team,
    *,
    base_cash_yuan: float | None = None,  # noqa: ANN001
    year: bool = True,
) -> float | None:
    """A programme's voucher valued on ``team``'s traffic over a year; None when it cannot pay here.

    ``base_cash_yuan``: the team's replay without it, when already known (one replay less).
    """
    from suanli.router.ops.scenarios import programme_voucher
    from suanli.router.ops.valuation import value_voucher

    start = team.export.start
    try:
        voucher = programme_voucher(programme, config, start, start + timedelta(days=365 if year else 1))
    except ValueError:
        return None
    if team.export.requests == 0:
        return 0.0
    found = value_voucher(
        team.config,
        team.export.lines,
        voucher,
        span_s=team.traffic.span_s,
        base_cash_yuan=base_cash_yuan,
        shadow=False,
    )
    return found.saved_yuan


def _value(args: argparse.Namespace) -> int:
    from suanli.config.programmes import load_programmes
    from suanli.router.ops.scenarios import programme_voucher
    from suanli.router.ops.team import read_team
    from suanli.router.ops.valuation import value_voucher, voucher_from_json
    from suanli.router.ops.whatif_cli import console, period

    config = _config(args.config)
    bounds = period(args, config, "value")
    if bounds is None:
        return 2
    since, until = bounds
    try:
        if args.voucher:
            voucher: Voucher = voucher_from_json(json.loads(args.voucher), now=datetime.now(UTC))
        else:
            programme = load_programmes(args.programmes).get(args.programme)
            voucher = programme_voucher(programme, config, since, since + timedelta(days=365))
    except (ValueError, KeyError, ConfigError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"suanli value: {str(exc).splitlines()[0] if str(exc) else exc}", file=sys.stderr)
        return 2
    if config.region(voucher.region) is None:
        print(f"suanli value: region {voucher.region!r} is not in the config", file=sys.stderr)
        return 2
    team = read_team(config, since=since, until=until, command="value", config_path=args.config)
    if team.export.requests == 0:
        print("suanli value: no usage on the ledger in that period: nothing to value it on", file=sys.stderr)
        return 0
    found = value_voucher(team.config, team.export.lines, voucher, span_s=team.traffic.span_s)
    if args.json:
        print(json.dumps(found.as_json(), indent=2))
        return 0
    from rich.table import Table

    table = Table(
        title=f"suanli value: {voucher.kind} voucher at {voucher.region}, {voucher.amount:,g} units,"
        f" {found.validity_h:,.1f} h valid, on {team.export.requests:,} requests"
        f" ({found.span_h:.1f} h of traffic)"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    shadow = found.shadow_yuan_per_unit
    for name, shown in (
        ("cash without it (yuan)", f"{found.cash_without_yuan:,.4f}"),
        ("cash with it (yuan)", f"{found.cash_with_yuan:,.4f}"),
        ("saved over its validity (yuan)", f"{found.saved_yuan:,.4f}"),
        ("used before expiry (units)", f"{found.used_units:,.2f} ({found.used_share:.1%})"),
        ("saved per unit used (yuan)", f"{found.average_yuan_per_unit:.6g}"),
        ("marginal value, shadow price (yuan/unit)", "n/a" if shadow is None else f"{shadow:.6g}"),
        ("traffic scaled to the validity", f"x{found.scale:.2f}"),
    ):
        table.add_row(name, shown)
    console().print(table)
    return 0


def _advise(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from suanli.config.programmes import load_programmes
    from suanli.router.ops.advise import TeamFacts, advise
    from suanli.router.ops.team import read_team
    from suanli.router.ops.trace_export import day_bounds, read_usage
    from suanli.router.ops.whatif_cli import console

    config = _config(args.config)
    try:
        since, until = day_bounds(args.since or "30d", args.until, ZoneInfo(config.timezone))
        programmes = load_programmes(args.programmes)
    except (ValueError, ConfigError) as exc:
        print(f"suanli advise: {exc}", file=sys.stderr)
        return 2
    rows = read_usage(config, since=since, until=until, command="advise", config_path=args.config)
    value = None
    if not args.no_value:
        sample_since = max(since, until - timedelta(days=args.value_days))
        team = read_team(config, since=sample_since, until=until, command="advise", config_path=args.config)
        base = None
        if team.export.requests:
            from suanli.router.ops.whatif import Scenario, replay_scenario

            keys = [None] * team.export.requests
            base = replay_scenario(team.config, team.export.lines, keys, Scenario(name="base")).cash_yuan

        def value(programme):  # noqa: ANN001, ANN202
            return programme_value(programme, config, team, base_cash_yuan=base)

    lines = advise(
        config,
        programmes,
        rows,
        since=since,
        until=until,
        team=TeamFacts(revenue_yuan=args.revenue, team_size=args.team_size),
        value=value,
    )
    if args.json:
        print(json.dumps([a.as_json() for a in lines], indent=2))
    else:
        console().print(
            advice_table(
                lines, title=f"suanli advise: {len(rows):,} requests, {since:%Y-%m-%d} to {until:%Y-%m-%d}"
            )
        )
    return 0


def advice_table(lines, *, title: str):  # noqa: ANN001, ANN201 - list[Advice] -> a rich Table
    """One row per programme."""
    from rich.table import Table

    table = Table(title=title)
    for column in (
        "programme",
        "region",
        "threshold /yr",
        "projected /yr",
        "qualifies",
        "gap",
        "free move /yr",
        "closes gap",
        "cost to close /yr",
        "value /yr",
        "lead weeks",
        "startups",
        "why",
    ):
        table.add_column(
            column,
            justify="left"
            if column in ("programme", "region", "qualifies", "why", "startups", "lead weeks", "closes gap")
            else "right",
        )
    for a in lines:
        estimate = " (est.)" if a.estimates else ""
        table.add_row(
            a.programme,
            a.region or "-",
            "-" if a.min_annual_spend_yuan is None else f"{a.min_annual_spend_yuan:,.0f}",
            f"{a.projected_annual_spend_yuan:,.0f}",
            a.qualifies,
            f"{a.gap_yuan:,.0f}",
            f"{a.free_move_yuan:,.0f}",
            "yes" if a.gap_closed_by_move else "-",
            "-" if a.close_cost_yuan is None else f"{a.close_cost_yuan:,.0f}",
            "-" if a.value_yuan is None else f"{a.value_yuan:,.0f}{estimate}",
            a.lead_time_weeks,
            a.startup_friendly,
            a.why,
        )
    return table
