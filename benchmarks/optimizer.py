"""Optimizer decision quality: every replay scenario under every policy, one table.

    .venv/bin/python benchmarks/optimizer.py [--scenarios benchmarks/scenarios] [--jobs 1]
                                             [--variants [--seed 7]] [--policies ...] [--json FILE]
    .venv/bin/python benchmarks/optimizer.py --random 40 [--first 0] [--jobs 2] [--keep-worst 3]

Each scenario directory holds ``config.yaml`` and ``trace.jsonl``. Every (scenario, policy)
is replayed in its own process by the code behind ``suanli simulate`` (same chooser,
planner and deferral scheduler as the proxy, on a virtual clock), and its decisions are
re-checked by the independent checker of ``tests/unit/optimizer/checker.py`` (rules broken
must be 0). ``--variants`` adds the variants of ``benchmarks/scenario_variants.py`` (west
origins, a looser SLO, other voucher amounts and expiries, a day seen from noon, flat
arrivals) of every scenario. With ``--jobs 2`` replays run two at a time: faster, but the
timing columns then share the cores.

Columns: cash in yuan per policy; ``bound`` is hindsight's LP relaxation, a lower bound on
every policy; ``opt/bound`` and ``opt/hind`` compare the optimizer with it and with the
hindsight policy; ``saving`` is the optimizer's cash below greedy's; ``rej`` interactive
requests rejected (optimizer / greedy); ``slo``, ``miss`` SLO violations and deadline misses of
the optimizer; ``rules`` what the checker found over all policies; decision time p50/p99 in
microseconds and the re-plan time (median / max) of the optimizer; ``replay`` its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = ("greedy", "round_robin", "optimizer", "hindsight")


def run_one(scenario: str, policy: str) -> dict:
    """Replay one scenario under one policy; the figures of the table (runs in a worker)."""
    from suanli.config import load_config
    from suanli.router.simulate.cli import decision_lines, summary
    from suanli.router.simulate.engine import replay
    from suanli.router.simulate.trace import load_trace
    from tests.unit.optimizer.checker import check_decisions

    path = Path(scenario)
    config = load_config(path / "config.yaml")
    trace = load_trace(path / "trace.jsonl", config)
    started = time.perf_counter()
    result = replay(config, trace, policy)
    wall_s = time.perf_counter() - started
    report = summary(config, result, requests=len(trace.jobs))
    lines = (path / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    check = check_decisions(config, lines, decision_lines(result))
    plans = sorted(result.plan_s)
    return {
        "scenario": path.name,
        "policy": policy,
        **{k: report[k] for k in ("requests", "rejected", "slo_violations", "deadline_misses", "cash_yuan")},
        "bound_cash_yuan": report.get("bound_cash_yuan"),
        "decision_us": report["decision_us"],
        "plan_s": {
            "n": len(plans),
            "p50": statistics.median(plans) if plans else 0.0,
            "max": max(plans, default=0.0),
        },
        "replay_s": wall_s,
        "rules_broken": len(check.violations),
        "checker_cash_yuan": check.cash_yuan,
    }


def scenario_dirs(root: Path, *, variants: bool, out: Path, seed: int = 7) -> list[Path]:
    """The scenarios under ``root`` (directories with config.yaml), and their variants."""
    found = [
        p for p in sorted(root.iterdir())
        if (p / "config.yaml").is_file() and (p / "trace.jsonl").is_file() and _supported(p)
    ]
    if not variants:
        return found
    from benchmarks.scenario_variants import VARIANTS, write_variant

    return found + [write_variant(p, name, out, seed=seed) for p in found for name in VARIANTS]


def _supported(path: Path) -> bool:
    """Whether this build reads the scenario (peaks and shocks need rules a later issue adds)."""
    from suanli.config import ConfigError, load_config
    from suanli.router.simulate.trace import TraceError, load_trace

    try:
        load_trace(path / "trace.jsonl", load_config(path / "config.yaml"))
    except (ConfigError, TraceError) as exc:
        print(f"{path.name}: not supported by this build: {str(exc).splitlines()[0][:100]}", file=sys.stderr)
        return False
    return True


def table(rows: list[dict]) -> list[dict]:
    """One row per scenario, from the per-(scenario, policy) figures."""
    by: dict[str, dict[str, dict]] = {}
    for row in rows:
        by.setdefault(row["scenario"], {})[row["policy"]] = row
    out = []
    for scenario, runs in by.items():
        cash = {p: runs[p]["cash_yuan"] for p in runs}
        opt, hind, greedy = (runs.get(p, {}).get("cash_yuan") for p in ("optimizer", "hindsight", "greedy"))
        bound = runs["hindsight"]["bound_cash_yuan"] if "hindsight" in runs else None
        mine = runs.get("optimizer")
        out.append(
            {
                "scenario": scenario,
                "requests": next(iter(runs.values()))["requests"],
                "cash": cash,
                "bound": bound,
                "opt/bound": _ratio(opt, bound),
                "opt/hind": _ratio(opt, hind),
                "hind/bound": _ratio(hind, bound),
                "saving": None if _ratio(opt, greedy) is None else 1 - _ratio(opt, greedy),
                "rejected": {p: runs[p]["rejected"] for p in runs},
                "slo_violations": mine["slo_violations"] if mine else None,
                "deadline_misses": {p: runs[p]["deadline_misses"] for p in runs},
                "rules_broken": sum(r["rules_broken"] for r in runs.values()),
                "decision_us": mine["decision_us"] if mine else None,
                "plan_s": mine["plan_s"] if mine else None,
                "replay_s": mine["replay_s"] if mine else None,
            }
        )
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_HEAD = ("opt/bound", "opt/hind", "hind/bound", "saving", "rej opt/greedy", "slo", "miss", "rules",
         "decision p50/p99 us", "plan p50/max ms", "replay s")  # fmt: skip


def _columns(policies: tuple[str, ...]) -> list[str]:
    return ["scenario", "requests", *policies, "bound", *_HEAD]


def _cells(row: dict, policies: tuple[str, ...]) -> list[str]:
    decision = row["decision_us"] or {}
    plan = row["plan_s"] or {}
    return [
        row["scenario"],
        f"{row['requests']:,}",
        *(_fmt(row["cash"].get(p), ".2f") for p in policies),
        _fmt(row["bound"], ".2f"),
        _fmt(row["opt/bound"], ".3f"),
        _fmt(row["opt/hind"], ".3f"),
        _fmt(row["hind/bound"], ".3f"),
        _fmt(row["saving"] * 100 if row["saving"] is not None else None, ".1f") + "%",
        f"{row['rejected'].get('optimizer', '-')}/{row['rejected'].get('greedy', '-')}",
        str(row["slo_violations"]),
        str(row["deadline_misses"].get("optimizer", "-")),
        str(row["rules_broken"]),
        f"{decision.get('p50', '-')}/{decision.get('p99', '-')}",
        f"{plan.get('p50', 0) * 1000:.0f}/{plan.get('max', 0) * 1000:.0f}" if plan else "-",
        _fmt(row["replay_s"], ".1f"),
    ]


def render(rows: list[dict], policies: tuple[str, ...]) -> None:
    """Print the table with rich."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title="optimizer decision quality (cash in yuan)")
    for column in _columns(policies):
        grid.add_column(column, justify="left" if column == "scenario" else "right")
    for row in rows:
        grid.add_row(*_cells(row, policies))
    Console(width=220).print(grid)


def markdown(rows: list[dict], policies: tuple[str, ...]) -> str:
    """The table as Markdown, for the README."""
    head = _columns(policies)
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(_cells(row, policies)) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, default=ROOT / "benchmarks" / "scenarios")
    parser.add_argument("--policies", nargs="*", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--jobs", type=int, default=1, help="replays at a time (timings share the cores)")
    parser.add_argument("--variants", action="store_true", help="also run variants of every scenario")
    parser.add_argument("--seed", type=int, default=7, help="seed of the variants (scenario_variants.py)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="replay N random days (scenario_gen.py) under greedy, optimizer, hindsight")
    parser.add_argument("--first", type=int, default=0, help="first seed of --random")
    parser.add_argument("--requests", type=int, default=None, help="requests per random day (default: drawn)")
    parser.add_argument("--no-shocks", action="store_true", help="random days without trace events")
    parser.add_argument("--keep-worst", type=int, default=0, metavar="K",
                        help="copy the K worst random days into benchmarks/regression/")
    parser.add_argument("--show", type=int, default=15, help="rows of the per-seed table (worst first)")
    args = parser.parse_args()
    if args.random:
        from benchmarks.random_family import run_random

        with tempfile.TemporaryDirectory(prefix="suanli-random-") as tmp:
            run_random(
                args.random, first=args.first, jobs=args.jobs, out=Path(tmp), requests=args.requests,
                shocks=not args.no_shocks, keep_worst=args.keep_worst, json_path=args.json, show=args.show,
            )  # fmt: skip
        print(f"machine: {os.cpu_count()} cores; command: {' '.join(sys.argv)}")
        return
    policies = tuple(p for p in POLICIES if p in args.policies)
    with tempfile.TemporaryDirectory(prefix="suanli-variants-") as tmp:
        dirs = scenario_dirs(args.scenarios, variants=args.variants, out=Path(tmp), seed=args.seed)
        tasks = [(str(d), p) for d in dirs for p in policies]
        if args.jobs > 1:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                results = list(pool.map(run_one, *zip(*tasks, strict=True)))
        else:
            results = [run_one(*task) for task in tasks]
    rows = table(results)
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "rows": rows}, indent=1), encoding="utf-8")
    if args.markdown:
        print(markdown(rows, policies))
    else:
        render(rows, policies)
    print(f"machine: {os.cpu_count()} cores; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
