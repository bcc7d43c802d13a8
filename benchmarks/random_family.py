"""``benchmarks/optimizer.py --random N``: the optimizer on N random days, as a distribution.

Seeds ``--first .. --first + N - 1`` of ``benchmarks/scenario_gen.py`` are replayed under
greedy, optimizer and hindsight (each replay in its own process, every decision re-checked by
``tests/unit/optimizer/checker.py``). Printed: one row per seed (worst first), then the
distribution: mean, p95 and max of optimizer cash / hindsight bound, and of the share of the
possible saving captured, ``(greedy - optimizer) / (greedy - bound)``. ``--keep-worst K``
copies the K worst seeds into ``benchmarks/regression/`` with the figures they had
(``expect.json``), where ``tests/unit/optimizer/test_regression_days.py`` replays them.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

__all__ = ["run_random"]

RANDOM_POLICIES = ("greedy", "optimizer", "hindsight")
REGRESSION = Path(__file__).resolve().parent / "regression"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _row(seed: int, runs: dict[str, dict]) -> dict:
    greedy, opt, hind = (runs[p]["cash_yuan"] for p in RANDOM_POLICIES)
    bound = runs["hindsight"]["bound_cash_yuan"] or 0.0
    gap = greedy - bound
    # A bound at or below zero counts requests no policy could serve (the LP's penalty for
    # leaving one out): it bounds nothing a ratio could use, and the day is left out of the
    # ratios (counted apart).
    usable = bound > 0
    return {
        "seed": seed,
        "requests": runs["optimizer"]["requests"],
        "greedy": greedy,
        "optimizer": opt,
        "hindsight": hind,
        "bound": bound,
        "opt/bound": opt / bound if usable else None,
        "hind/bound": hind / bound if usable else None,
        "opt/hind": opt / hind if hind > 0 else None,
        # a day where greedy is already at the bound has nothing to capture
        "captured": ((greedy - opt) / gap if gap > 1e-6 else 1.0) if usable else None,
        "rejected": (runs["optimizer"]["rejected"], runs["greedy"]["rejected"]),
        "misses": (runs["optimizer"]["deadline_misses"], runs["greedy"]["deadline_misses"]),
        "rules": sum(r["rules_broken"] for r in runs.values()),
        "plan_ms": (runs["optimizer"]["plan_s"]["p50"] * 1000, runs["optimizer"]["plan_s"]["max"] * 1000),
        "decision_us": runs["optimizer"]["decision_us"],
        "replay_s": runs["optimizer"]["replay_s"],
    }


def _print(rows: list[dict], show: int) -> None:
    head = ("seed", "requests", "greedy", "optimizer", "hindsight", "bound", "opt/bound", "hind/bound",
            "opt/hind", "captured", "rej opt/greedy", "miss opt/greedy", "rules",
            "plan p50/max ms")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows[:show]:
        cells = [
            str(r["seed"]), f"{r['requests']:,}", f"{r['greedy']:.2f}", f"{r['optimizer']:.2f}",
            f"{r['hindsight']:.2f}", f"{r['bound']:.2f}", _f(r["opt/bound"], ".3f"),
            _f(r["hind/bound"], ".3f"), _f(r["opt/hind"], ".3f"),
            _f(None if r["captured"] is None else r["captured"] * 100, ".1f") + "%",
            "{}/{}".format(*r["rejected"]), "{}/{}".format(*r["misses"]),
            str(r["rules"]),
            "{:.0f}/{:.0f}".format(*r["plan_ms"]),
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    kept = [r for r in rows if r["opt/bound"] is not None]
    ratios = [r["opt/bound"] for r in kept]
    hind = [r["hind/bound"] for r in kept]
    vs_hind = [r["opt/hind"] for r in rows if r["opt/hind"] is not None]
    captured = [r["captured"] for r in kept]
    print()
    print(f"| figure ({len(kept)} days with a positive bound) | mean | p95 | max | min |")
    print("|---|---|---|---|---|")
    named = (
        ("optimizer cash / bound", ratios),
        ("hindsight cash / bound", hind),
        ("optimizer / hindsight (every day)", vs_hind),
    )
    for name, values in named:
        figures = (statistics.mean(values), _p95(values), max(values), min(values))
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in figures) + " |")
    low = sorted(captured)
    figures = (statistics.mean(captured), low[len(low) // 20], max(captured), min(captured))
    print("| captured saving (p95 column: p5) | " + " | ".join(f"{v * 100:.1f}%" for v in figures) + " |")
    worse = sum(1 for r in rows if r["rejected"][0] > r["rejected"][1])
    dearer = sum(1 for r in rows if r["optimizer"] > r["greedy"] + 1e-9)
    print(
        f"\n{len(rows)} seeds ({len(rows) - len(kept)} with a bound <= 0 left out of the ratios); "
        f"optimizer dearer than greedy on {dearer}; rules broken {sum(r['rules'] for r in rows)}; "
        "deadline misses (optimizer) "
        f"{sum(r['misses'][0] for r in rows)}; seeds with more interactive rejections than greedy {worse}"
    )


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_random(
    count: int, *, first: int, jobs: int, out: Path, requests: int | None, shocks: bool, keep_worst: int,
    json_path: Path | None, show: int,
) -> list[dict]:  # fmt: skip
    """Generate, replay and summarise seeds ``first .. first + count - 1``; the rows, worst first."""
    from benchmarks.optimizer import run_one
    from benchmarks.scenario_gen import write_scenario

    dirs = {seed: write_scenario(out / f"seed-{seed}", seed, requests=requests, shocks=shocks)
            for seed in range(first, first + count)}  # fmt: skip
    tasks = [(str(d), p) for d in dirs.values() for p in RANDOM_POLICIES]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(run_one, *zip(*tasks, strict=True)))
    else:
        results = [run_one(*task) for task in tasks]
    by: dict[str, dict[str, dict]] = {}
    for result in results:
        by.setdefault(result["scenario"], {})[result["policy"]] = result
    rows = [_row(seed, by[f"seed-{seed}"]) for seed in dirs]
    rows.sort(key=lambda r: -(r["opt/bound"] or 0.0))
    _print(rows, show)
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    for r in rows[:keep_worst]:
        target = REGRESSION / f"seed-{r['seed']}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(dirs[r["seed"]], target)
        expect = {k: r[k] for k in ("seed", "greedy", "optimizer", "hindsight", "bound", "opt/bound")}
        (target / "expect.json").write_text(json.dumps(expect, indent=1) + "\n", encoding="utf-8")
    return rows
