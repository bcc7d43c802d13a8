"""What periodic packages lost: the balance each period left when it ended (``suanli report``).

A package is one ledger voucher per local period (``router/ledger/packages.py``, ids
``{voucher}@{first day}``); what is left of one when its period ends is lost (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.table import Table

from suanli.router.ledger.packages import base_id, is_instance
from suanli.router.ledger.types import VoucherStatus

__all__ = ["losses_table", "package_losses"]


def package_losses(vouchers: Iterable[VoucherStatus], *, since: datetime, until: datetime) -> list[dict]:
    """Each package period that ended in ``(since, until]``: its amount, what it paid, what it lost."""
    out = []
    for v in vouchers:
        if not is_instance(v.id) or v.expires is None or not since < v.expires <= until:
            continue
        out.append({
            "voucher": base_id(v.id),
            "period": v.id.split("@", 1)[1],
            "region": v.region,
            "kind": v.kind,
            "amount": v.amount,
            "used": v.spent,
            "lost": v.balance,
        })
    return sorted(out, key=lambda row: (row["voucher"], row["period"]))


def losses_table(rows: list[dict]) -> Table:
    """The lost balances as a rich table, one package period a row."""
    table = Table(title="packages: left at the end of each period (lost)", title_justify="left")
    for column in ("voucher", "period from", "region", "amount", "used", "lost"):
        table.add_column(column, justify="right" if column in ("amount", "used", "lost") else "left")
    for row in rows:
        unit = " tok" if row["kind"] == "tokens" else " ¥"
        table.add_row(row["voucher"], row["period"], row["region"], f"{row['amount']:,.4g}{unit}",
                      f"{row['used']:,.4g}{unit}", f"{row['lost']:,.4g}{unit}")
    return table
