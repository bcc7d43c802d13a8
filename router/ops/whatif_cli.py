"""``suanli trace export`` and ``suanli whatif``: the ledger's traffic as a trace, and replays of it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from suanli.config import Config, load_catalog, load_config

__all__ = ["add_parsers", "console", "period"]


def add_parsers(sub: Any) -> None:  # an argparse sub-parsers object (no public type)
    """Register ``trace export`` and ``whatif`` on the ``suanli`` sub-commands."""
    trace = sub.add_parser("trace", help="traces of the team's own traffic")
    actions = trace.add_subparsers(metavar="ACTION")
    export = actions.add_parser("export", help="the ledger's usage rows as a suanli/v1 trace (for simulate)")
    _period_args(export)
    export.add_argument("--out", help="write the trace here (default: stdout)")
    export.set_defaults(func=_export)

    whatif = sub.add_parser(
        "whatif", help="replay the team's traffic under scenarios: cash, rejections, who is hurt"
    )
    _period_args(whatif)
    whatif.add_argument("--scenarios", help="scenario file (YAML/JSON; default: the built-in set)")
    whatif.add_argument("--programmes", help="programmes catalog for `programme:` entries (default: bundled)")
    whatif.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="replays run in this many processes (default %(default)s)",
    )
    whatif.add_argument(
        "--replan-s",
        type=float,
        default=1800.0,
        help="re-plan every this many replayed seconds (default %(default)s; 300 replays as simulate does)",
    )
    whatif.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    whatif.set_defaults(func=_whatif)


def _period_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config YAML whose ledger to read (default: the bundled catalog)")
    parser.add_argument(
        "--since", help="start: 24h, 7d, today, or an ISO date/time (default: 24h before --until)"
    )
    parser.add_argument("--until", help="end, excluded (default: now)")


def _config(path: str | None) -> Config:
    return load_config(path) if path else load_catalog()


def period(args: argparse.Namespace, config: Config, command: str):  # noqa: ANN201 - (since, until) or None
    """``--since``/``--until`` read as ``suanli report`` reads them; None (said on stderr) when bad."""
    from suanli.router.ops.trace_export import day_bounds

    try:
        return day_bounds(args.since, args.until, ZoneInfo(config.timezone))
    except ValueError as exc:
        print(f"suanli {command}: {exc}", file=sys.stderr)
        return None


def console():  # noqa: ANN201 - a rich Console
    """A rich console; piped output gets a wide one (rich would squeeze tables into 80 columns)."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)


def _export(args: argparse.Namespace) -> int:
    from suanli.router.ops.trace_export import (
        export_trace,
        read_starts,
        read_usage,
        read_windows,
        settled_until,
    )

    config = _config(args.config)
    bounds = period(args, config, "trace export")
    if bounds is None:
        return 2
    since, until = bounds
    rows = read_usage(
        config,
        since=since,
        until=settled_until(config, until),
        command="trace export",
        config_path=args.config,
    )
    url = config.ledger.url
    windows, starts = read_windows(url), read_starts(url, since=since)
    trace = export_trace(rows, config, since=since, until=until, windows=windows, starts=starts)
    if args.out:
        Path(args.out).write_text(trace.text(), encoding="utf-8")
    else:
        sys.stdout.write(trace.text())
    skipped = ", ".join(f"{n} {why}" for why, n in trace.skipped.items())
    print(
        f"suanli trace export: {trace.requests} requests, {trace.reference_tokens:,.0f} reference tokens,"
        f" {trace.cash_yuan:.4f} yuan cash on the ledger" + (f"; left out: {skipped}" if skipped else ""),
        file=sys.stderr,
    )
    return 0


def _whatif(args: argparse.Namespace) -> int:
    from suanli.router.ops.scenarios import default_scenarios, load_scenarios
    from suanli.router.ops.team import read_team
    from suanli.router.ops.whatif import run_whatif

    config = _config(args.config)
    bounds = period(args, config, "whatif")
    if bounds is None:
        return 2
    since, until = bounds
    team = read_team(
        config, since=since, until=until, command="whatif", config_path=args.config, replan_s=args.replan_s
    )
    if team.export.requests == 0:
        print("suanli whatif: no usage on the ledger in that period: nothing to replay", file=sys.stderr)
        if args.json:
            print(json.dumps({"requests": 0, "scenarios": []}))
        return 0
    try:
        if args.scenarios:
            from suanli.config.programmes import load_programmes

            scenarios = load_scenarios(
                args.scenarios, team.config, team.traffic, load_programmes(args.programmes)
            )
        else:
            scenarios = default_scenarios(team.config, team.traffic)
    except (ValueError, KeyError) as exc:
        print(f"suanli whatif: {exc}", file=sys.stderr)
        return 2
    out = console()
    quiet = args.json or not out.is_terminal
    with _progress(out, len(scenarios) + 1, quiet=quiet) as step:
        result = run_whatif(
            team.config,
            team.export.lines,
            team.export.keys,
            scenarios,
            ledger_cash_yuan=team.export.cash_yuan,
            workers=max(1, args.workers),
            progress=step,
            priorities=team.priorities,
            ledger_cash=team.export.ledger_cash,
        )
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        out.print(whatif_table(result))
    return 0


class _progress:
    """A rich progress bar over the replays (silent for --json or a pipe)."""

    def __init__(self, out, total: int, *, quiet: bool) -> None:  # noqa: ANN001 - a rich Console
        self.out, self.total, self.quiet = out, total, quiet
        self.bar = None

    def __enter__(self):  # noqa: ANN204
        if not self.quiet:
            from rich.progress import Progress

            self.bar = Progress(console=self.out, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("replaying", total=self.total)
        return self

    def __call__(self, outcome) -> None:  # noqa: ANN001 - an Outcome
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"replayed {outcome.name}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def whatif_table(result):  # noqa: ANN001, ANN201 - a WhatIf -> a rich Table
    """One row per scenario: cash, change, rejections, misses, who is hurt."""
    from rich.table import Table

    table = Table(
        title=(
            f"suanli whatif: {result.requests:,} requests; ledger cash {result.ledger_cash_yuan:.4f} yuan,"
            f" base replay {result.base.cash_yuan:.4f} ({result.base_vs_ledger - 1:+.1%})"
            + (
                f" ({result.base.cash_yuan / result.ledger_cash_served_yuan - 1:+.1%} on the requests"
                " both served)"
                if result.ledger_cash_served_yuan
                else ""
            )
            + f"; {result.wall_s:.1f} s"
        )
    )
    for column in (
        "scenario",
        "cash yuan",
        "change",
        "rejected",
        "deadline misses",
        "classes hurt",
        "keys hurt",
        "what",
    ):
        table.add_column(
            column,
            justify="right" if column in ("cash yuan", "change", "rejected", "deadline misses") else "left",
        )
    base = result.base
    table.add_row(
        "base",
        f"{base.cash_yuan:.4f}",
        "",
        f"{base.rejected:,}",
        f"{base.deadline_misses:,}",
        "",
        "",
        base.note,
    )
    for o in result.scenarios:
        share = f" ({o.change_yuan / base.cash_yuan:+.1%})" if base.cash_yuan > 1e-9 else ""
        table.add_row(
            o.name,
            f"{o.cash_yuan:.4f}",
            f"{o.change_yuan:+.4f}{share}",
            f"{o.rejected:,}",
            f"{o.deadline_misses:,}",
            ", ".join(o.hurt_classes) or "-",
            (", ".join(o.hurt_keys) or "-")
            + (f" (priority {', '.join(o.hurt_priorities)})" if o.hurt_priorities else ""),
            o.note,
        )
    return table
