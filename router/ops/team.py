"""A team's own traffic over a period, from its ledger, ready to replay: what whatif, value and advise read.

``team_day`` takes what the ledger holds (usage rows settled from the period's start, voucher
balances now, the month before the period's end) and returns the exported trace, the config
whose vouchers start from the balances they had when the period began (now's balance plus
what was spent since), and the figures scenarios are sized on. ``read_team`` reads all that
from the ledger a config names (SQLite or PostgreSQL), for the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from suanli.config import Config
from suanli.router.ledger.types import UsageRow
from suanli.router.ops.scenarios import Traffic
from suanli.router.ops.trace_export import ExportedTrace, Window, export_trace, read_starts, read_windows
from suanli.router.ops.whatif import REPLAN_S, at_balances, replanning_every

__all__ = ["TeamDay", "read_team", "team_day"]

MONTH = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class TeamDay:
    """The period's trace, the config as the period began, and the traffic figures."""

    config: Config
    export: ExportedTrace
    traffic: Traffic
    since: datetime
    until: datetime
    priorities: dict[str, str] = field(default_factory=dict)  # key id -> priority, when keys carry one


def team_day(
    config: Config,
    *,
    since: datetime,
    until: datetime,
    rows: Sequence[UsageRow],
    balances_now: Mapping[str, float] | None = None,
    month_cash_yuan: float | None = None,
    windows: Mapping[str, Window] | None = None,
    replan_s: float | None = REPLAN_S,
    starts: Mapping[str, float] | None = None,
) -> TeamDay:
    """``rows``: every usage row settled from ``since`` on (the trace keeps those that arrived
    before ``until``; deferred work of the period settles after it).

    ``balances_now`` (voucher id -> posted balance) turns into the balances at ``since`` by adding
    back what ``rows`` spent; None keeps the config's amounts. ``starts``: hold id -> when it was
    made (``read_starts``), when the requests started.
    """
    export = export_trace(rows, config, since=since, until=until, windows=windows, starts=starts)
    start_config = replanning_every(config, replan_s)
    if balances_now is not None:
        spent: dict[str, float] = {}
        for row in rows:
            if row.voucher_id:
                spent[row.voucher_id] = spent.get(row.voucher_id, 0.0) + row.voucher_units
        start_config = at_balances(start_config, {v: b + spent.get(v, 0.0) for v, b in balances_now.items()})
    offsets = [_t(line) for line in export.lines[1:]]
    span_s = max((until - since).total_seconds(), max(offsets, default=0.0))
    traffic = Traffic(
        start=export.start,
        span_s=span_s,
        offsets_s=offsets,
        regions=export.ledger_region,
        cash=export.ledger_cash,
        last_month_cash_yuan=export.cash_yuan if month_cash_yuan is None else month_cash_yuan,
    )
    return TeamDay(config=start_config, export=export, traffic=traffic, since=since, until=until)


def _t(line: str) -> float:
    import orjson

    return float(orjson.loads(line)["t"])


def read_team(
    config: Config,
    *,
    since: datetime,
    until: datetime,
    command: str,
    config_path: str | None,
    balances: bool = True,
    replan_s: float | None = REPLAN_S,
) -> TeamDay:
    """The team's period from the ledger ``config`` names (the CLI's path; either backend)."""
    from suanli.router.ledger.port import read_vouchers
    from suanli.router.ops.audit_cli import read_book
    from suanli.router.ops.ledger_cli import reading_ledger

    url = reading_ledger(config, command=command, config_path=config_path)
    far = datetime(9999, 1, 1, tzinfo=UTC)
    with read_book(url) as ledger:
        rows = ledger.usage(since=since, until=far)
        month = ledger.usage(since=until - MONTH, until=until)
        # a build whose keys carry a priority (critical, normal, sheddable): whatif reports by it
        priorities = {k.id: str(p) for k in ledger.keys() if (p := getattr(k, "priority", None))}
    now = None
    if balances and config.vouchers:
        now = {status.id: status.balance for status in read_vouchers(config.ledger, config.vouchers)}
    month_cash = math.fsum(r.cash_yuan for r in month)
    team = team_day(
        config,
        since=since,
        until=until,
        rows=rows,
        balances_now=now,
        month_cash_yuan=month_cash,
        windows=read_windows(url),
        replan_s=replan_s,
        starts=read_starts(url, since=since),
    )
    return replace(team, priorities=priorities)
