"""Rich tables for the CLI: voucher balances and a config summary."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table

from suanli.config import Config

__all__ = ["config_summary", "voucher_table"]


def voucher_table(rows: list[dict], *, now: datetime) -> Table:
    """Balances, share used, burn and time to expiry, one voucher a row."""
    table = Table(title="suanli vouchers")
    for column in ("voucher", "region", "kind", "balance", "held", "used", "burn/h", "expires in"):
        table.add_column(column, justify="right" if column not in ("voucher", "region", "kind") else "left")
    for row in rows:
        amount = row["amount"] or 0.0
        used = (amount - row["balance"]) / amount if amount else 0.0
        table.add_row(
            row["id"],
            row["region"],
            row["kind"],
            _units(row["available"], row["kind"]),
            _units(row["held"], row["kind"]),
            f"{used:.1%}",
            _units(row["burn_per_hour"], row["kind"]),
            _until(row.get("expires"), now),
        )
    return table


def _units(value: float, kind: str) -> str:
    return f"{value:,.0f} tok" if kind == "tokens" else f"¥{value:,.4f}"


def _until(expires: str | None, now: datetime) -> str:
    if not expires:
        return "never"
    left = datetime.fromisoformat(expires) - now
    if left.total_seconds() <= 0:
        return "[red]expired[/red]"
    days, rest = divmod(int(left.total_seconds()), 86400)
    return f"{days}d {rest // 3600}h" if days else f"[yellow]{rest // 3600}h {rest % 3600 // 60}m[/yellow]"


def config_summary(config: Config) -> Table:
    """Regions with zone, provider, models and limits, then the vouchers."""
    table = Table(title=f"{len(config.regions)} regions, {len(config.vouchers)} vouchers ({config.timezone})")
    for column in ("region", "zone", "provider", "models (yuan/M in/out)", "limits", "latency prior"):
        table.add_column(column)
    for region in config.regions:
        models = ", ".join(f"{o.name} {o.price.input:g}/{o.price.output:g}" for o in region.models)
        limits = f"rpm {region.limits.rpm or '-'} tpm {region.limits.tpm or '-'}"
        rtt = " ".join(f"{zone} {ms:g}" for zone, ms in region.rtt_ms.items())
        table.add_row(
            region.id, region.zone, region.provider, models, limits, f"ttft {region.ttft_ms:g} ms, rtt {rtt}"
        )
    for voucher in config.vouchers:
        scope = ", ".join(voucher.models or ()) or "any model"
        table.add_row(
            f"[bold]{voucher.id}[/bold]",
            "",
            voucher.kind,
            f"{voucher.amount:g} on {voucher.region}",
            scope,
            f"until {voucher.expires.isoformat() if voucher.expires else 'never'}",
        )
    return table
