"""The monitor's reconciliation table and alert deliveries (from the status document)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

__all__ = ["balances_table", "balances_height", "deliveries_line"]

_STATE_STYLE = {"drift": "bold red", "unknown": "yellow", "ok": "green", "baseline": "cyan"}


def balances_height(doc: dict) -> int:
    """Lines the balances table takes (0 when no region has a ``balance:`` block)."""
    rows = doc.get("reconcile") or []
    return len(rows) + 4 if rows else 0


def balances_table(doc: dict) -> Table | None:
    """One line per region with a ``balance:`` block: platform against ledger per unit; unknown is never 0."""
    rows = doc.get("reconcile") or []
    if not rows:
        return None
    table = Table(title="balances: platform against ledger", title_justify="left", expand=True)
    for name in ("region", "source", "state", "platform", "expected", "drift", "checked"):
        table.add_column(name, justify="right" if name in ("platform", "expected", "drift") else "left")
    for row in rows:
        units = row.get("units") or {}
        platform = "  ".join(_figure(unit, u["platform"]) for unit, u in sorted(units.items())) or "unknown"
        expected = "  ".join(_figure(unit, u["expected"]) for unit, u in sorted(units.items()))
        drift = "  ".join(
            f"{u['drift']:+,.2f}" + ("!" if u["flagged"] else "")
            for _, u in sorted(units.items())
            if u["drift"] is not None
        )
        note = row.get("error") or (row.get("checked_at") or "")[11:19]
        table.add_row(
            row["region"], row["source"], Text(row["state"], style=_STATE_STYLE.get(row["state"], "")),
            platform, expected, drift, note,
        )
    return table


def deliveries_line(doc: dict) -> str | None:
    """``webhook: N delivered, M failed, K pending`` of the recent alerts, or None without a webhook."""
    sent = doc.get("alerts_sent")
    if not sent or not sent.get("webhook"):
        return None
    counts: dict[str, int] = {}
    for alert in sent.get("recent") or []:
        outcome = str(alert.get("delivery", "pending")).split(":")[0]
        counts[outcome] = counts.get(outcome, 0) + 1
    shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing sent yet"
    return f"webhook: {shown}"


def _figure(unit: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:,.0f} tok" if unit == "tokens" else f"¥{value:,.2f}"
