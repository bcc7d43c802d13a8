"""``suanli simulate``: replay a trace through the live chooser on a virtual clock.

``add_parser(subparsers)`` registers the sub-command; ``run_cli(args)`` runs it. With
``--json`` one JSON object goes to stdout with the keys of DESIGN.md (``hindsight`` adds
``bound_cash_yuan``); otherwise a rich table. ``--decisions FILE`` writes one line per
trace request, in trace order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from suanli.config import Config, ConfigError, load_config
from suanli.router.simulate.engine import POLICIES, Replay, replay
from suanli.router.simulate.trace import TraceError, load_trace

__all__ = ["add_parser", "decision_lines", "run_cli", "summary"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``simulate`` on a CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "simulate",
        help="replay a trace through the chooser on a virtual clock",
        description="Replay a JSON-lines trace through suanli's chooser and planner, with no network.",
    )
    parser.add_argument("--config", required=True, help="config YAML")
    parser.add_argument("--trace", required=True, help="trace JSON lines (suanli/v1)")
    parser.add_argument(
        "--policy", choices=POLICIES, default="optimizer", help="routing policy (default optimizer)"
    )
    parser.add_argument(
        "--decisions", default=None, help="write one decision per request to this JSON-lines file"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``simulate`` with parsed ``args``; the exit status."""
    try:
        config = load_config(args.config)
        trace = load_trace(args.trace, config)
    except (ConfigError, TraceError, OSError) as exc:
        print(f"suanli simulate: {exc}", file=sys.stderr)
        return 2
    result = replay(config, trace, args.policy)
    if args.decisions:
        _write_decisions(Path(args.decisions), result)
    report = summary(config, result, requests=len(trace.jobs))
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        _print_table(report)
    return 0


def summary(config: Config, result: Replay, *, requests: int) -> dict:
    """The ``--json`` object of DESIGN.md for ``result``."""
    spent = {v.id: 0.0 for v in config.vouchers}
    by_region: dict[str, dict[str, float]] = {}
    cash = 0.0
    served = 0
    for d in result.decisions:
        if d.region is None:
            continue
        served += 1
        cash += d.cash_yuan
        if d.voucher is not None:
            spent[d.voucher] += d.voucher_units
        row = by_region.setdefault(d.region, {"requests": 0, "tokens": 0, "cash_yuan": 0.0})
        row["requests"] += 1
        row["tokens"] += d.tokens
        row["cash_yuan"] += d.cash_yuan
    for row in by_region.values():
        row["cash_yuan"] = round(row["cash_yuan"], 6)
    amounts = {v.id: v.amount for v in config.vouchers}
    report: dict = {
        "policy": result.policy,
        "requests": requests,
        "served": served,
        "rejected": result.rejected,
        "slo_violations": result.slo_violations,
        "deadline_misses": result.deadline_misses,
        "cash_yuan": round(cash, 6),
        "voucher_spent": {k: _number(v) for k, v in spent.items()},
        # what is left: the amount less what was spent, with the trace's cuts and top-ups
        "voucher_unused": {
            k: _number(max(result.balances.get(k, amounts[k] - v), 0.0)) for k, v in spent.items()
        },
        "by_region": dict(sorted(by_region.items())),
        "decision_us": _percentiles(result.decision_ns),
    }
    if result.bound_cash_yuan is not None:
        report["bound_cash_yuan"] = round(result.bound_cash_yuan, 6)
    return report


def _number(value: float) -> float | int:
    # Token balances are whole; yuan keep six decimals.
    return int(round(value)) if abs(value - round(value)) < 1e-9 else round(value, 6)


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] / 1000.0, 1)

    return {"p50": pick(0.50), "p99": pick(0.99)}


def decision_lines(result: Replay) -> list[str]:
    """The ``--decisions`` lines of DESIGN.md for ``result``, in trace order."""
    return [
        orjson.dumps(
            {"i": d.i, "region": d.region, "start": d.start, "voucher": d.voucher, "cash_yuan": d.cash_yuan}
        ).decode()
        for d in result.decisions
    ]


def _write_decisions(path: Path, result: Replay) -> None:
    path.write_text("".join(line + "\n" for line in decision_lines(result)), encoding="utf-8")


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = Table(title=f"suanli simulate - policy {report['policy']}")
    head.add_column("figure")
    head.add_column("value", justify="right")
    for key in (
        "requests",
        "served",
        "rejected",
        "slo_violations",
        "deadline_misses",
        "cash_yuan",
        "bound_cash_yuan",
    ):
        if key in report:
            head.add_row(key, f"{report[key]:,.4f}" if isinstance(report[key], float) else f"{report[key]:,}")
    head.add_row(
        "decision p50 / p99 (us)", f"{report['decision_us']['p50']} / {report['decision_us']['p99']}"
    )
    console.print(head)
    regions = Table(title="by region")
    for column in ("region", "requests", "tokens", "cash yuan"):
        regions.add_column(column, justify="left" if column == "region" else "right")
    for region, row in report["by_region"].items():
        regions.add_row(region, f"{row['requests']:,}", f"{row['tokens']:,}", f"{row['cash_yuan']:.4f}")
    console.print(regions)
    vouchers = Table(title="vouchers")
    for column in ("voucher", "spent", "unused"):
        vouchers.add_column(column, justify="left" if column == "voucher" else "right")
    for voucher, spent in report["voucher_spent"].items():
        vouchers.add_row(voucher, f"{spent:,}", f"{report['voucher_unused'][voucher]:,}")
    console.print(vouchers)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m router.simulate``) until the suanli CLI wires it in."""
    parser = argparse.ArgumentParser(prog="suanli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
