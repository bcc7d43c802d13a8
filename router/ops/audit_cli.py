"""``suanli audit verify`` and ``suanli audit export``: the ledger's audit from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

from suanli.config import Config, load_catalog, load_config
from suanli.router.errors import LedgerError
from suanli.router.ledger.audit import ChainBrokenError, export_csv, parse_bound, verify
from suanli.router.ledger.port import AuditSource, read_audit_source
from suanli.router.ops.ledger_cli import reading_ledger

__all__ = ["add_parser", "read_book"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``audit`` (verify, export) on a CLI's sub-parsers."""
    audit = subparsers.add_parser("audit", help="verify the usage hash chain; export a subsidy claim")
    actions = audit.add_subparsers(metavar="ACTION")

    check = actions.add_parser(
        "verify", help="walk the hash chain; report the first changed, inserted or deleted row (exit 1)"
    )
    check.add_argument("--config", help="config YAML whose ledger to read (default: the bundled catalog)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--head", metavar="ROW:HASH",
                       help="a chain head published earlier (an export's): the chain must pass through it")
    check.set_defaults(func=_verify)

    export = actions.add_parser("export", help="per-request CSV of a voucher's usage, with the chain head")
    export.add_argument("--config", help="config YAML whose ledger to read (default: the bundled catalog)")
    export.add_argument("--voucher", help="only requests this voucher paid for (default: every request)")
    export.add_argument("--from", dest="since", help="first day (YYYY-MM-DD, local) or ISO time")
    export.add_argument("--to", dest="until", help="last day, counted whole, or an ISO time (exclusive)")
    export.add_argument("--out", help="write the CSV here (default: stdout)")
    export.set_defaults(func=_export)


def _config(path: str | None) -> Config:
    return load_config(path) if path else load_catalog()


@contextmanager
def read_book(url: str) -> Iterator[AuditSource]:
    """What the audit (and ``suanli report``) reads: the SQLite ledger, or a snapshot of a PostgreSQL one.

    Either offers ``chain_rows``, ``chain_orphans``, ``keys`` and ``usage``.
    """
    with ExitStack() as stack:
        try:
            ledger = stack.enter_context(read_audit_source(url))
        except LedgerError as exc:
            print(f"suanli audit: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        yield ledger


def _verify(args: argparse.Namespace) -> int:
    anchor = None
    if args.head:
        row, _, digest = args.head.partition(":")
        if not row.isdigit() or len(digest) != 64:
            print("suanli audit verify: --head wants ROW:HASH (a 64-digit hex hash)", file=sys.stderr)
            return 2
        anchor = (int(row), digest.lower())
    config = _config(args.config)
    with read_book(reading_ledger(config, command="audit verify", config_path=args.config)) as ledger:
        report = verify(ledger, anchor=anchor)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "rows": report.rows,
                    "head_id": report.head_id,
                    "head_hash": report.head_hash,
                    "problem": report.problem,
                    "row_id": report.row_id,
                    "message": report.message,
                    "in_doubt": list(report.in_doubt),  # row ids: sent, never answered, charged at the hold
                }
            )
        )
    elif report.ok:
        print(f"audit verify: OK, {report.message}")
    else:
        print(f"audit verify: FAILED, {report.message}")
    return 0 if report.ok else 1


def _export(args: argparse.Namespace) -> int:
    config = _config(args.config)
    tz = ZoneInfo(config.timezone)
    try:
        since = parse_bound(args.since, tz, end=False) if args.since else None
        until = parse_bound(args.until, tz, end=True) if args.until else None
    except ValueError as exc:
        print(f"suanli audit export: {exc}", file=sys.stderr)
        return 2
    if args.voucher and args.voucher not in {v.id for v in config.vouchers}:
        print(f"suanli audit export: note: voucher {args.voucher!r} is not in the config", file=sys.stderr)
    try:
        with read_book(reading_ledger(config, command="audit export", config_path=args.config)) as ledger:
            text = export_csv(ledger, voucher=args.voucher, since=since, until=until, tz=tz)
    except ChainBrokenError as exc:
        print(f"suanli audit export: {exc}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
