"""``suanli vouchers adjust ID AMOUNT --reason WHY``: an operator's top-up or cut of a voucher.

With ``--url`` it asks the running server (``POST /admin/vouchers/{id}/adjust``), which re-plans
at once: the way to adjust while a server runs. Without, it writes the config's ledger directly
(a server that is not running); either way the adjustment is a row of the usage chain.
"""

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

from suanli.config import Config
from suanli.router.errors import LedgerError
from suanli.router.ledger.port import open_ledger

__all__ = ["add_parser", "adjust"]


def add_parser(actions: Any) -> None:
    """Add ``adjust`` to ``suanli vouchers``'s actions."""
    parser = actions.add_parser("adjust", help="top up (AMOUNT > 0) or cut (AMOUNT < 0) a voucher")
    parser.add_argument("voucher", help="the voucher id")
    parser.add_argument("amount", type=float, help="voucher units: tokens, or yuan (credit, discount cap)")
    parser.add_argument("--reason", required=True, help="why (kept on the ledger beside the row)")
    parser.add_argument("--config", help="config YAML whose ledger to write (default: the bundled catalog)")
    parser.add_argument("--url", help="ask a running server instead, e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", help="master key for --url (default: $SUANLI_MASTER_KEY)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from suanli.config import load_catalog, load_config

    key = args.key or os.environ.get("SUANLI_MASTER_KEY") or None
    config = None if args.url else (load_config(args.config) if args.config else load_catalog())
    return adjust(args.voucher, args.amount, reason=args.reason, url=args.url, key=key, config=config,
                  as_json=args.json)


def adjust(voucher_id: str, amount: float, *, reason: str, url: str | None, key: str | None,
           config: Config | None, as_json: bool = False) -> int:
    """Adjust and print the result. Exit code: 0 done, 1 refused or unreachable, 2 bad input."""
    if amount == 0 or amount != amount or not reason.strip():
        print("suanli vouchers adjust: AMOUNT must be a non-zero number, --reason non-empty", file=sys.stderr)
        return 2
    if url:
        done = _over_http(voucher_id, amount, reason, url, key)
    else:
        done = _in_ledger(voucher_id, amount, reason, config)
    if done is None:
        return 1
    if as_json:
        print(json.dumps(done, indent=2))
        return 0
    verb = "topped up" if float(done["applied"]) >= 0 else "cut"
    line = (f"{voucher_id}: {verb} by {abs(float(done['applied'])):g} (asked {amount:g});"
            f" balance {float(done['balance']):g}, available {float(done['available']):g}")
    if amount < 0 and float(done["applied"]) > amount + 1e-9:
        line += f"; {float(done['held']):g} held by requests in flight could not be cut"
    print(line)
    return 0


def _over_http(voucher_id: str, amount: float, reason: str, url: str, key: str | None) -> dict | None:
    address = f"{url.rstrip('/')}/admin/vouchers/{voucher_id}/adjust"
    body = json.dumps({"amount": amount, "reason": reason}).encode()
    request = urllib.request.Request(address, data=body, method="POST")
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


def _in_ledger(voucher_id: str, amount: float, reason: str, config: Config | None) -> dict | None:
    if config is None:
        raise ValueError("a config is needed to adjust a voucher in the ledger directly")

    async def run() -> dict:
        now = lambda: datetime.now(UTC)  # noqa: E731
        ledger = await open_ledger(config.ledger, config.vouchers, clock=now, sweep_s=None)
        try:
            return (await ledger.adjust(voucher_id, amount, reason.strip())).as_dict()
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except LedgerError as exc:
        print(f"suanli vouchers adjust: {exc}", file=sys.stderr)
        return None
