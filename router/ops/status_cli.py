"""The ``suanli monitor`` and ``suanli report`` subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    """Add ``monitor`` and ``report`` to the ``suanli`` subcommands."""
    monitor = sub.add_parser("monitor", help="live terminal dashboard of a running server (q quits)")
    monitor.add_argument("--url", default=os.environ.get("SUANLI_URL", "http://127.0.0.1:8080"),
                         help="the server (default: $SUANLI_URL, else %(default)s)")
    monitor.add_argument("--key", help="master key (default: $SUANLI_MASTER_KEY)")
    monitor.add_argument("--once", action="store_true", help="print one snapshot and exit")
    monitor.set_defaults(func=_monitor)

    report = sub.add_parser("report", help="spend by region, voucher, key and class over a period")
    report.add_argument("--config", help="config YAML whose ledger to read (default: the bundled catalog)")
    report.add_argument(
        "--since",
        default="today",
        help="start: 24h, 7d, today, or an ISO date/time (default: today, local midnight)",
    )
    report.add_argument("--until", default="now", help="end, excluded (default: now)")
    report.add_argument(
        "--by", default=",".join(_dimensions()), help="comma-separated dimensions (default: %(default)s)"
    )
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.set_defaults(func=_report)


def _dimensions() -> tuple[str, ...]:
    from suanli.router.ops.spend_report import DIMENSIONS

    return DIMENSIONS


def _console():
    from rich.console import Console

    console = Console()
    # Piped output has no width of its own; rich would squeeze tables into 80 columns.
    return console if console.is_terminal else Console(width=160)


def _monitor(args: argparse.Namespace) -> int:
    from suanli.router.ops.monitor import MonitorOptions, run_monitor, show_once

    options = MonitorOptions(url=args.url, key=args.key or os.environ.get("SUANLI_MASTER_KEY") or None)
    console = _console()
    if args.once or not console.is_terminal:
        return show_once(options, console)
    # A live screen follows the terminal's size; a COLUMNS/LINES left in the environment would pin it.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
    from rich.console import Console

    return run_monitor(options, Console())


def _report(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from suanli.config import load_catalog, load_config
    from suanli.router.ops.cache_report import cache_figures, cache_table
    from suanli.router.ops.package_report import losses_table, package_losses
    from suanli.router.ops.spend_report import DIMENSIONS, parse_moment, spend_report

    config = load_config(args.config) if args.config else load_catalog()
    tz = ZoneInfo(config.timezone)
    now = datetime.now(UTC)
    by = [d.strip() for d in args.by.split(",") if d.strip()]
    unknown = [d for d in by if d not in DIMENSIONS]
    try:
        if unknown:
            raise ValueError(f"unknown dimension {unknown[0]!r}: use {', '.join(DIMENSIONS)}")
        since, until = parse_moment(args.since, now=now, tz=tz), parse_moment(args.until, now=now, tz=tz)
    except ValueError as exc:
        print(f"suanli report: {exc}", file=sys.stderr)
        return 2
    from suanli.router.ops.audit_cli import read_book  # either backend
    from suanli.router.ops.ledger_cli import reading_ledger

    with read_book(reading_ledger(config, command="report", config_path=args.config)) as ledger:
        rows = ledger.usage(since=since, until=until)
        key_names = {key.id: key.name for key in ledger.keys()}
        lost = package_losses(ledger.vouchers(), since=since, until=until)  # periodic packages' leftovers
    report = spend_report(
        rows, since=since.astimezone(tz), until=until.astimezone(tz), by=by, key_names=key_names
    )
    cache = cache_figures(rows)
    if args.format == "json":
        print(json.dumps({**report.as_json(), "packages_lost": lost, "cache": cache}, indent=2))
    elif args.format == "csv":
        sys.stdout.write(report.as_csv())
        for row in lost:
            sys.stdout.write(f"package_lost,{row['voucher']}@{row['period']},,,,,{row['lost']}\n")
    else:
        _console().print(report.as_tables())
        if lost:
            _console().print(losses_table(lost))
        if cache["total"]["hits"]:
            _console().print(cache_table(cache))
    return 0
