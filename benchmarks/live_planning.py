"""Live planning: re-plan time, event-loop stalls while the worker thread solves, decision time.

    .venv/bin/python benchmarks/live_planning.py [--scenarios benchmarks/scenarios] [--hours 6] [--solves 5]

For each scenario, the live ``Replanner`` learns its forecast from the first ``--hours`` of the
trace (as if the proxy had served it), then re-plans ``--solves`` times in its worker thread
while an asyncio loop on the main thread measures how late a 1 ms sleep wakes up (the stall a
request would see). Then ``rank`` is timed on the trace's requests, greedy (no plan) and with
the live plan. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from suanli.config import ConfigError, load_config  # noqa: E402
from suanli.optimizer import Ask, State, rank  # noqa: E402
from suanli.router.core.planning import Replanner  # noqa: E402
from suanli.router.simulate.trace import TraceError, load_trace  # noqa: E402


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _solve_once(planner: Replanner, clock: Clock, period_s: float) -> list[float]:
    """Move the clock one period on; the loop's wake-up delays (ms) while the thread re-plans."""
    stalls: list[float] = []
    want = planner.info()["plans"] + 1
    clock.now += timedelta(seconds=period_s)
    deadline = time.monotonic() + 60
    while planner.info()["plans"] < want and time.monotonic() < deadline:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append((time.perf_counter() - started) * 1000 - 1.0)
    return stalls


async def _idle_stalls(seconds: float) -> list[float]:
    """The loop's wake-up delays (ms) with no solve running: the machine's own noise."""
    stalls: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append((time.perf_counter() - started) * 1000 - 1.0)
    return stalls


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0


def measure(directory: Path, hours: float, solves: int) -> dict:
    config = load_config(directory / "config.yaml")
    trace = load_trace(directory / "trace.jsonl", config)
    start = datetime.fromtimestamp(trace.start_s, UTC)
    clock = Clock(start)
    balances = {v.id: v.amount for v in config.vouchers}
    planner = Replanner(config, clock=clock, balances=lambda: balances, poll_s=0.01, min_gap_s=0.0)
    planner.start()
    asks = []
    try:
        for job, rel in zip(trace.jobs, trace.offsets_s, strict=True):
            ask = Ask(job.model, job.work_class, job.origin, job.input_tokens, job.output_tokens)
            asks.append(ask)
            if rel <= hours * 3600:
                clock.now = start + timedelta(seconds=rel)
                planner.served(ask, region="", prompt_tokens=0, completion_tokens=int(job.output_tokens),
                               reported=False, at=clock.now)
        clock.now = start + timedelta(hours=hours)
        gc.freeze()  # as `suanli serve` does once started: full collections stay short
        solve_ms: list[float] = []
        stalls: list[float] = []
        for _ in range(solves):
            stalls += asyncio.run(_solve_once(planner, clock, config.planner.replan_s))
            solve_ms.append(planner.info()["solve_ms"] or 0.0)
        idle = asyncio.run(_idle_stalls(0.5))
        info = planner.info()
        live_plan = planner.plan
    finally:
        planner.stop()
    state = State(balances=balances)
    timings: dict[str, list[float]] = {"greedy": [], "plan": []}
    for name, use in (("greedy", None), ("plan", live_plan)):
        for ask in asks[:5000]:
            started = time.perf_counter_ns()
            rank(config, ask, state, clock.now, plan=use)
            timings[name].append((time.perf_counter_ns() - started) / 1000)
    return {
        "scenario": directory.name,
        "groups": info.get("demand_groups", 0),
        "solve_p50": statistics.median(solve_ms),
        "solve_max": max(solve_ms),
        "idle_max": max(idle, default=0.0),
        "stall_max": max(stalls, default=0.0),
        "greedy_us": (_pct(timings["greedy"], 0.5), _pct(timings["greedy"], 0.99)),
        "plan_us": (_pct(timings["plan"], 0.5), _pct(timings["plan"], 0.99)),
        "error": info.get("error"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, default=ROOT / "benchmarks" / "scenarios")
    parser.add_argument("--hours", type=float, default=6.0, help="trace hours the forecast learns from")
    parser.add_argument("--solves", type=int, default=5)
    args = parser.parse_args()
    table = Table(title=f"live re-planning (forecast from {args.hours:g} h of each trace)")
    columns = ("scenario", "demand groups", "solve ms p50", "solve ms max", "loop stall ms max (idle)",
               "loop stall ms max (solving)", "rank us p50/p99 greedy", "rank us p50/p99 with plan", "error")
    for column in columns:
        table.add_column(column, justify="left" if column in ("scenario", "error") else "right")
    for directory in sorted(p for p in args.scenarios.iterdir() if (p / "trace.jsonl").exists()):
        try:
            row = measure(directory, args.hours, args.solves)
        except (ConfigError, TraceError) as exc:  # peaks, shocks: rules a later issue adds
            table.add_row(directory.name, *["-"] * 7, f"not supported: {str(exc)[:60]}")
            continue
        table.add_row(
            row["scenario"], str(row["groups"]), f"{row['solve_p50']:.0f}", f"{row['solve_max']:.0f}",
            f"{row['idle_max']:.1f}", f"{row['stall_max']:.1f}",
            "{:.1f} / {:.1f}".format(*row["greedy_us"]), "{:.1f} / {:.1f}".format(*row["plan_us"]),
            row["error"] or "",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
