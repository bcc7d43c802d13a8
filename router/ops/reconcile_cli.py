"""``suanli reconcile`` and ``suanli vouchers set-balance``: the platforms' balances against the ledger."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

__all__ = ["add_parsers", "reconcile_table"]


def add_parsers(sub: Any, actions: Any) -> None:
    """Add ``reconcile`` to the subcommands and ``set-balance`` to ``suanli vouchers``'s ``actions``."""
    reconcile = sub.add_parser("reconcile", help="compare the platforms' own balances with the ledger")
    reconcile.add_argument("--config", help="config YAML (default: the bundled catalog)")
    reconcile.add_argument("--url", help="ask a running server to reconcile now, e.g. http://127.0.0.1:8080")
    reconcile.add_argument("--key", help="master key for --url (default: $SUANLI_MASTER_KEY)")
    reconcile.add_argument("--json", action="store_true", help="print JSON instead of a table")
    reconcile.set_defaults(func=_reconcile)

    figure = actions.add_parser(
        "set-balance", help="record a region's balance as the platform's console shows it"
    )
    figure.add_argument("region")
    figure.add_argument("--cash-yuan", type=float, help="money topped up, in yuan")
    figure.add_argument("--granted-yuan", type=float, help="gift or voucher yuan")
    figure.add_argument("--tokens", type=float, help="tokens left in a token package")
    figure.add_argument("--baseline", action="store_true", help="count from here again (a top-up)")
    figure.add_argument("--note", default="", help="where the figure comes from")
    figure.add_argument("--config", help="config YAML whose ledger to write (default: the bundled catalog)")
    figure.add_argument("--url", help="send it to a running server instead")
    figure.add_argument("--key", help="master key for --url (default: $SUANLI_MASTER_KEY)")
    figure.set_defaults(func=_set_balance)


def _key(args: argparse.Namespace) -> str | None:
    return args.key or os.environ.get("SUANLI_MASTER_KEY") or None


def _load(path: str | None) -> Any:
    from suanli.config import load_catalog, load_config

    return load_config(path) if path else load_catalog()


def _post(url: str, key: str | None, body: dict | None) -> dict | None:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {url}: {exc}", file=sys.stderr)
    return None


def _reconcile(args: argparse.Namespace) -> int:
    if args.url:
        found = _post(args.url.rstrip("/") + "/admin/reconcile", _key(args), None)
        if found is None:
            return 1
        rows = found["data"]
    else:
        rows = asyncio.run(_reconcile_local(_load(args.config)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from rich.console import Console

        console = Console() if sys.stdout.isatty() else Console(width=160)
        console.print(reconcile_table(rows))
    return 0 if all(row["state"] != "drift" for row in rows) else 3


async def _reconcile_local(config: Any) -> list[dict]:
    """One pass with this process's own ledger handle and HTTP session (sims must run elsewhere)."""
    from suanli.router.ledger.port import open_ledger
    from suanli.router.status.reconcile import Reconciler

    ledger = await open_ledger(config.ledger, config.vouchers, clock=lambda: datetime.now(UTC), sweep_s=None)
    try:
        reconciler = Reconciler(
            config,
            lambda: ledger,
            base_url=lambda rid: region.base_url if (region := config.region(rid)) is not None else None,
            clock=lambda: datetime.now(UTC),
        )
        await reconciler.run_once()
        await reconciler.stop()
        return reconciler.report()
    finally:
        await ledger.close()


def _set_balance(args: argparse.Namespace) -> int:
    amounts = {u: v for u, v in (("cash_yuan", args.cash_yuan), ("granted_yuan", args.granted_yuan),
                                 ("tokens", args.tokens)) if v is not None}
    if not amounts:
        print("give at least one of --cash-yuan, --granted-yuan, --tokens", file=sys.stderr)
        return 2
    if any(v < 0 for v in amounts.values()):
        print("a balance figure cannot be negative", file=sys.stderr)
        return 2
    body = {**amounts, "baseline": args.baseline, "note": args.note}
    if args.url:
        found = _post(f"{args.url.rstrip('/')}/admin/regions/{args.region}/balance", _key(args), body)
        if found is None:
            return 1
        recorded = found["recorded"]
    else:
        config = _load(args.config)
        if config.region(args.region) is None:
            print(f"no region {args.region!r} in the config", file=sys.stderr)
            return 2
        recorded = asyncio.run(_record_local(config, args.region, amounts, args.baseline, args.note))
    for row in recorded:
        kind = "baseline" if row["baseline"] else "reading"
        print(f"{args.region}: {row['unit']} = {row['amount']:,.6g} recorded as a {kind}")
    return 0


async def _record_local(
    config: Any, region: str, amounts: dict[str, float], baseline: bool, note: str
) -> list[dict]:
    from suanli.router.ledger.port import open_ledger
    from suanli.router.status.reconcile import record_manual

    now = datetime.now(UTC)
    ledger = await open_ledger(config.ledger, config.vouchers, clock=lambda: now, sweep_s=None)
    try:
        rows = await record_manual(ledger, region, amounts, at=now.timestamp(), baseline=baseline, note=note)
    finally:
        await ledger.close()
    return [{"unit": f.unit, "amount": f.amount, "baseline": f.baseline} for f in rows]


def reconcile_table(rows: list[dict]):
    """The reconciliation report as a rich table: one line per region and unit; unknown is never 0."""
    from rich.table import Table

    table = Table(title="reconciliation: the platforms' balances against the ledger")
    for column in ("region", "source", "state", "unit", "platform", "expected", "drift", "checked"):
        table.add_column(column, justify="right" if column in ("platform", "expected", "drift") else "left")
    style = {"drift": "bold red", "unknown": "yellow", "ok": "green", "baseline": "cyan"}
    for row in rows:
        state = f"[{style.get(row['state'], '')}]{row['state']}[/]"
        units = row.get("units") or {}
        if not units:
            table.add_row(row["region"], row["source"], state, "", "unknown", "", "", row.get("error") or "")
            continue
        for unit, u in sorted(units.items()):
            table.add_row(
                row["region"], row["source"], state, unit, _figure(u["platform"]), _figure(u["expected"]),
                "" if u["drift"] is None else f"{u['drift']:+,.4f}" + (" !" if u["flagged"] else ""),
                row.get("error") or (row.get("checked_at") or "")[:19],
            )
    return table


def _figure(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.4f}"
