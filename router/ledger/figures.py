"""Platform balance figures on the ledger: the baselines reconciliation measures drift from.

A *figure* is what a platform said (or an operator typed) a region's balance was at a time,
in one unit kept apart from the others: ``cash_yuan`` (topped-up money), ``granted_yuan``
(gift or voucher yuan), ``tokens`` (a token package). A baseline figure starts the count:
what the ledger says should be left now is the baseline minus what the ledger recorded spent
in that unit at that region since. Both drivers share this module's table and row shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from suanli.router.ledger.tables import Dialect, create_table

__all__ = [
    "FIGURE_COLUMNS",
    "UNITS",
    "Figure",
    "RegionSpend",
    "figure_of",
    "figures_table",
    "spend_of",
]

UNITS = ("cash_yuan", "granted_yuan", "tokens")

FIGURE_COLUMNS = "id, region, at, source, unit, amount, baseline, note"


def figures_table(d: Dialect) -> str:
    """One row per recorded figure: a baseline, or a manual reading (``suanli vouchers set-balance``)."""
    return create_table("platform_figures", (
        "id TEXT PRIMARY KEY",
        "region TEXT NOT NULL",
        f"at {d.real} NOT NULL",
        "source TEXT NOT NULL",
        "unit TEXT NOT NULL",
        f"amount {d.real} NOT NULL",
        "baseline INTEGER NOT NULL",
        "note TEXT NOT NULL",
    ))


@dataclass(frozen=True, slots=True)
class Figure:
    """A region's balance in one unit at one time (epoch seconds), as the platform or an operator said."""

    id: str
    region: str
    at: float
    source: str  # "api" | "manual"
    unit: str  # one of UNITS
    amount: float
    baseline: bool
    note: str = ""


def figure_of(row: Sequence[Any]) -> Figure:
    """A row read in ``FIGURE_COLUMNS`` order."""
    return Figure(
        id=row[0],
        region=row[1],
        at=float(row[2]),
        source=row[3],
        unit=row[4],
        amount=float(row[5]),
        baseline=bool(row[6]),
        note=row[7],
    )


@dataclass(frozen=True, slots=True)
class RegionSpend:
    """What the ledger recorded spent at a region since a time, by payer."""

    cash_yuan: float = 0.0
    # voucher id -> (units, yuan) paid by that voucher
    vouchers: dict[str, tuple[float, float]] | None = None


# Usage rows at one region settled in (since, until], summed per voucher (NULL: cash only).
SPEND_SQL = (
    "SELECT voucher_id, SUM(cash_yuan), SUM(voucher_units), SUM(voucher_yuan) FROM usage"
    " WHERE region = {p1} AND time > {p2} AND time <= {p3} GROUP BY voucher_id"
)


def spend_of(rows: Sequence[Sequence[Any]]) -> RegionSpend:
    """``SPEND_SQL``'s rows as a RegionSpend."""
    cash = 0.0
    vouchers: dict[str, tuple[float, float]] = {}
    for voucher_id, cash_yuan, units, yuan in rows:
        cash += float(cash_yuan or 0.0)
        if voucher_id is not None:
            vouchers[str(voucher_id)] = (float(units or 0.0), float(yuan or 0.0))
    return RegionSpend(cash_yuan=cash, vouchers=vouchers)
