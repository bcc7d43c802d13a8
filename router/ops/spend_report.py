"""``suanli report``: spend by region, voucher, key and class over a period, from the ledger.

Every figure is a sum over the ledger's settled usage rows in ``[since, until)``, so the
report agrees with the usage export to the last digit.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from rich.console import Group
from rich.table import Table

from suanli.router.ledger.sqlite.ledger import UsageRow
from suanli.router.ledger.types import IN_DOUBT_STATUS

__all__ = ["DIMENSIONS", "SpendReport", "in_doubt_entry", "parse_moment", "spend_report"]

DIMENSIONS = ("region", "voucher", "key", "class")
_MEASURES = ("requests", "tokens", "cost_yuan", "cash_yuan", "voucher_yuan")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class SpendReport:
    """Sums per value of each dimension; ``groups[dim]`` maps value -> measure -> sum."""

    since: datetime
    until: datetime
    totals: dict[str, float]
    groups: dict[str, dict[str, dict[str, float]]]
    key_names: dict[str, str] = field(default_factory=dict)  # key id -> the name it was created with
    # Rows in doubt (sent, never answered, charged at their hold), each as in_doubt_entry; in the sums too.
    in_doubt: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "totals": self.totals,
            "in_doubt": self.in_doubt,
            "by": {
                dim: [{dim: value, **self._name(dim, value), **sums} for value, sums in _ordered(rows)]
                for dim, rows in self.groups.items()
            },
        }

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["dimension", "value", *_MEASURES])
        for dim, rows in self.groups.items():
            for value, sums in _ordered(rows):
                writer.writerow([dim, value, *(_cell(sums[m]) for m in _MEASURES)])
        writer.writerow(["total", "", *(_cell(self.totals[m]) for m in _MEASURES)])
        for entry in self.in_doubt:
            writer.writerow(["in_doubt", entry["request_id"], 1, entry["tokens"], entry["cost_yuan"],
                             entry["cash_yuan"], entry["voucher_yuan"]])
        return out.getvalue()

    def as_tables(self) -> Group:
        tables = []
        period = f"{self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M %z}"
        for dim, rows in self.groups.items():
            table = Table(title=f"spend by {dim}, {period}", title_justify="left")
            table.add_column(dim)
            for measure in (*_MEASURES, "cash share"):
                table.add_column(measure.replace("_yuan", " ¥"), justify="right")
            cash = self.totals["cash_yuan"]
            for value, sums in _ordered(rows):
                share = f"{sums['cash_yuan'] / cash:.1%}" if cash else "-"
                name = self._name(dim, value).get("name")
                label = f"{value} ({name})" if name else value
                table.add_row(label, *(_shown(m, sums[m]) for m in _MEASURES), share)
            table.add_row("[bold]total[/bold]", *(_shown(m, self.totals[m]) for m in _MEASURES), "")
            tables.append(table)
        if self.in_doubt:
            table = Table(
                title="in doubt: sent, never answered, charged at their hold (in the sums above)",
                title_justify="left",
            )
            for column in ("request", "time", "region", "key", "cost ¥"):
                table.add_column(column, justify="right" if column == "cost ¥" else "left")
            for entry in self.in_doubt:
                table.add_row(entry["request_id"], entry["time"], entry["region"], entry["key"] or "(none)",
                              f"{entry['cost_yuan']:,.4f}")
            tables.append(table)
        return Group(*tables)

    def _name(self, dim: str, value: str) -> dict[str, str]:
        name = self.key_names.get(value) if dim == "key" else None
        return {"name": name} if name else {}


def spend_report(
    rows: Iterable[UsageRow],
    *,
    since: datetime,
    until: datetime,
    by: Sequence[str] = DIMENSIONS,
    key_names: dict[str, str] | None = None,
) -> SpendReport:
    """Sum ``rows`` (already limited to the period) per value of each dimension in ``by``."""
    totals = dict.fromkeys(_MEASURES, 0.0)
    groups: dict[str, dict[str, dict[str, float]]] = {
        dim: defaultdict(lambda: dict.fromkeys(_MEASURES, 0.0)) for dim in by
    }
    in_doubt: list[dict] = []
    for row in rows:
        if row.status == IN_DOUBT_STATUS:
            in_doubt.append(in_doubt_entry(row))
        values = {
            "region": row.region,
            "voucher": row.voucher_id or "cash",
            "key": row.key_id or "(none)",
            "class": row.work_class,
        }
        for sums in (totals, *(groups[dim][values[dim]] for dim in by)):
            sums["requests"] += 1
            sums["tokens"] += row.tokens
            sums["cost_yuan"] += row.cost_yuan
            sums["cash_yuan"] += row.cash_yuan
            sums["voucher_yuan"] += row.voucher_yuan
    totals = {m: _rounded(m, v) for m, v in totals.items()}
    clean = {
        dim: {value: {m: _rounded(m, v) for m, v in sums.items()} for value, sums in rows_.items()}
        for dim, rows_ in groups.items()
    }
    names = dict(key_names or {})
    return SpendReport(
        since=since, until=until, totals=totals, groups=clean, key_names=names, in_doubt=in_doubt
    )


def in_doubt_entry(row: UsageRow) -> dict:
    """One in-doubt usage row as JSON-ready data."""
    return {
        "request_id": row.request_id,
        "row_id": row.id,
        "time": row.time.isoformat(),
        "region": row.region,
        "key": row.key_id,
        "tokens": row.tokens,
        "cost_yuan": round(row.cost_yuan, 6),
        "cash_yuan": round(row.cash_yuan, 6),
        "voucher_yuan": round(row.voucher_yuan, 6),
    }


def parse_moment(text: str, *, now: datetime, tz: tzinfo) -> datetime:
    """``7d``, ``24h``, ``30m``, ``2w`` ago; ``today``; ``now``; or ISO (local time without an offset)."""
    text = text.strip()
    if text == "now":
        return now
    if text == "today":
        return now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(seconds=float(relative[1]) * _UNIT_S[relative[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a time: use 24h, 7d, today, 2026-12-01 or 2026-12-01T08:00+08:00"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _ordered(rows: dict[str, dict[str, float]]) -> list[tuple[str, dict[str, float]]]:
    """Most cash first, then most cost, then by name: the top of the table is where money goes."""
    return sorted(rows.items(), key=lambda item: (-item[1]["cash_yuan"], -item[1]["cost_yuan"], item[0]))


def _rounded(measure: str, value: float) -> float:
    return int(value) if measure in ("requests", "tokens") else round(value, 6)


def _cell(value: float) -> str:
    return str(value)


def _shown(measure: str, value: float) -> str:
    return f"{int(value):,}" if measure in ("requests", "tokens") else f"{value:,.4f}"
