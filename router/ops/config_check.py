"""``suanli config check FILE [--probe]``: every problem of a config, then (``--probe``) what
each region's platform says about its key and model names."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from suanli.config import Config, load_config

__all__ = ["add_parser"]

_PROBED = ("openai", "sim")  # OpenAI-compatible regions: GET {base_url}/models


def add_parser(config_sub: Any) -> None:
    """Register ``check`` under ``suanli config``."""
    check = config_sub.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("file")
    check.add_argument("--probe", action="store_true",
                       help="also call each region's GET /models: key, model names, reachability")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds per region for --probe")
    check.set_defaults(func=_config_check)


def _config_check(args: argparse.Namespace) -> int:
    from suanli.router.ops.reports import config_summary

    config = load_config(args.file)  # a ConfigError lists every problem (cli.main prints them)
    console = _console()
    console.print(config_summary(config))
    print(f"{args.file}: OK")
    if not args.probe:
        return 0
    rows = asyncio.run(_probe(config, timeout_s=args.timeout))
    console.print(_probe_table(rows))
    bad = [row for row in rows if row[2] not in ("ok", "not probed")]
    fine = f"probe: {len(rows) - len(bad)} of {len(rows)} region(s) fine"
    print(fine + (f", {len(bad)} not" if bad else ""))
    return 1 if bad else 0


async def _probe(config: Config, *, timeout_s: float) -> list[tuple[str, str, str, str]]:
    """``(region, url, verdict, detail)`` per region, in config order."""
    from suanli.providers.model_check import check_regions

    fleet = None
    if any(r.provider == "sim" and not r.base_url for r in config.regions):
        from suanli.providers.sim import SimFleet

        # In-process sims (no base_url): start them, as serve and demo would, and ask them too.
        fleet = SimFleet(config, latency_scale=0.0)
        await fleet.start()
    try:
        urls = fleet.urls if fleet else {}
        targets, skipped = [], {}
        for region in config.regions:
            url = region.base_url or urls.get(region.id)
            if region.provider in _PROBED and url:
                targets.append((region, url))
            else:
                skipped[region.id] = f"provider {region.provider} without base_url: set base_url to probe it"
        checks = {c.region: c for c in await check_regions(targets, timeout_s=timeout_s)}
    finally:
        if fleet is not None:
            await fleet.stop()
    rows = []
    for region in config.regions:
        check = checks.get(region.id)
        if check is None:
            rows.append((region.id, "-", "not probed", skipped[region.id]))
        else:
            rows.append((region.id, check.url, check.verdict, check.detail))
    return rows


def _probe_table(rows: list[tuple[str, str, str, str]]):
    from rich.table import Table

    table = Table(title="probe: GET /models per region")
    for column in ("region", "url", "verdict", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"ok": "green", "not probed": "yellow"}
    for region, url, verdict, detail in rows:
        table.add_row(region, url, f"[{colours.get(verdict, 'red')}]{verdict}[/]", detail)
    return table


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160, file=sys.stdout)
