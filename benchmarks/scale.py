"""How the planner grows: re-plan CPU and decision time against regions, vouchers and requests.

    .venv/bin/python benchmarks/scale.py [--regions 8 16 32 64] [--vouchers 5 20 80 160]
                                         [--requests 4000 16000] [--replans 12] [--quality]

Each point is a day of ``scenario_gen.py`` (seed ``--seed``, no shocks) stretched to the
given size: its regions cloned (ids suffixed, prices within 10%) until there are R of them,
its vouchers cloned onto the clones of their regions until there are V (``--distinct``:
each clone opens 1-6 hours later). The forecast learns the first ``--warm`` hours as the
replay's does; then the replay optimizer's plan (``plan`` with the demand scenarios,
solved to completion, then the chooser's prices) is made ``--replans`` times, five
virtual minutes apart, the forecast learning the requests in between. Printed per point:
LP size, re-plan CPU (``time.process_time``: a loaded machine inflates it less than wall
time) p50 and max, and ``rank`` with that plan on the day's interactive requests (p50,
p99 in microseconds, wall time; and p99 of the thread's CPU time, which the scheduler
does not inflate). ``--quality`` also replays each point's day under the
optimizer and hindsight (slow at the large sizes) and prints optimizer cash / bound.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.scenario_gen import generate  # noqa: E402


def stretch(config: dict, regions: int, vouchers: int, seed: int, *, distinct: bool = False) -> dict:
    """``config`` with exactly ``regions`` regions and ``vouchers`` vouchers (clones added).

    A voucher's clone is alike but for its id and region (the planner pools alike vouchers
    of one region); with ``distinct`` its validity also opens 1-6 hours later, so none pool.
    """
    rng = random.Random(f"suanli-scale-{seed}-{regions}-{vouchers}")
    out = copy.deepcopy(config)
    base = out["regions"]
    grown = list(base[:regions])
    clones: dict[str, list[str]] = {r["id"]: [r["id"]] for r in grown}
    n = 0
    while len(grown) < regions:
        source = base[n % len(base)]
        clone = copy.deepcopy(source)
        clone["id"] = f"{source['id']}-{n // len(base) + 1}"
        for offer in clone["models"]:
            f = rng.uniform(0.9, 1.1)
            offer["price"] = {k: round(v * f, 3) for k, v in offer["price"].items()}
        grown.append(clone)
        clones.setdefault(source["id"], []).append(clone["id"])
        n += 1
    out["regions"] = grown
    kept = [v for v in out["vouchers"] if v["region"] in clones]
    if not kept:
        kept = [{**out["vouchers"][0], "region": grown[0]["id"]}] if out["vouchers"] else []
        clones.setdefault(grown[0]["id"], [grown[0]["id"]])
    made = list(kept[:vouchers])
    n = 0
    while len(made) < vouchers and kept:
        source = kept[n % len(kept)]
        clone = copy.deepcopy(source)
        clone["id"] = f"{source['id']}-c{n}"
        clone["region"] = rng.choice(clones[source["region"]])
        if distinct:
            opens = datetime.fromisoformat(clone["valid_from"]) + timedelta(hours=rng.randint(1, 6))
            clone["valid_from"] = opens.isoformat()
            if datetime.fromisoformat(clone["expires"]) <= opens:
                clone["expires"] = (opens + timedelta(hours=2)).isoformat()
        made.append(clone)
        n += 1
    out["vouchers"] = made
    return out


def measure(
    point: dict, *, seed: int, warm_h: float, replans: int, quality: bool, tmp: Path, distinct: bool = False
) -> dict:
    from suanli.config import load_config
    from suanli.optimizer import FORECAST_SPREAD, Ask, Forecast, Snapshot, State, plan, rank, slot_edges
    from suanli.optimizer.columns import column_arrays
    from suanli.optimizer.plan import NO_LIMIT, POOL_FROM_VOUCHERS
    from suanli.optimizer.prices import prepare_prices
    from suanli.router.simulate.trace import load_trace, span_end

    raw, header, lines = generate(seed, requests=point["requests"], shocks=False)
    raw = stretch(raw, point["regions"], point["vouchers"], seed, distinct=distinct)
    day = tmp / f"r{point['regions']}-v{point['vouchers']}-n{point['requests']}"
    day.mkdir(parents=True, exist_ok=True)
    (day / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    import json

    body = [json.dumps(header)] + [json.dumps(line) for line in lines]
    (day / "trace.jsonl").write_text("\n".join(body) + "\n", encoding="utf-8")
    config = load_config(day / "config.yaml")
    trace = load_trace(day / "trace.jsonl", config)
    forecast = Forecast(config, start_s=trace.start_s, end_s=span_end(trace))
    jobs = iter(trace.jobs)
    pending = next(jobs, None)
    balances = {v.id: v.amount for v in config.vouchers}
    horizon = config.planner.horizon_h * 3600.0
    cpu: list[float] = []
    columns = groups = 0
    found = None
    now = trace.start_s + warm_h * 3600.0
    for _ in range(replans):
        while pending is not None and pending.arrival_s <= now:
            forecast.observe_job(pending)
            pending = next(jobs, None)
        edges = slot_edges(config, now, now + horizon)
        started = time.process_time()
        snapshot = Snapshot(config, now, horizon, balances, forecast.demand(edges, now))
        found = plan(snapshot, time_limit_s=NO_LIMIT, demand_scenarios=FORECAST_SPREAD)
        prepare_prices(config, found)
        cpu.append(time.process_time() - started)
        groups = len(snapshot.demand)
        pooled = len(config.vouchers) > POOL_FROM_VOUCHERS  # as ``plan`` decides
        columns = len(column_arrays(snapshot, tuple(edges), pool=pooled))
        now += 300.0
    state = State(balances=balances)
    decision_us: list[float] = []
    decision_cpu_us: list[float] = []
    for job in trace.jobs:
        if job.work_class != "interactive":
            continue
        ask = Ask(job.model, job.work_class, job.origin, job.input_tokens, job.output_tokens)
        when = datetime.fromtimestamp(now, UTC)
        started_cpu, started_ns = time.thread_time_ns(), time.perf_counter_ns()
        rank(config, ask, state, when, plan=found)
        decision_us.append((time.perf_counter_ns() - started_ns) / 1000)
        decision_cpu_us.append((time.thread_time_ns() - started_cpu) / 1000)
        if len(decision_us) >= 5000:
            break
    decision_us.sort()
    decision_cpu_us.sort()
    row = {
        **point,
        "groups": groups,
        "columns": columns,
        "cpu_p50_ms": statistics.median(cpu) * 1000,
        "cpu_max_ms": max(cpu) * 1000,
        "rank_p50_us": decision_us[len(decision_us) // 2] if decision_us else 0.0,
        "rank_p99_us": decision_us[min(len(decision_us) - 1, int(0.99 * len(decision_us)))]
        if decision_us
        else 0.0,
        "rank_cpu_p99_us": decision_cpu_us[min(len(decision_cpu_us) - 1, int(0.99 * len(decision_cpu_us)))]
        if decision_cpu_us
        else 0.0,
        "ratio": None,
    }
    if quality:
        from benchmarks.optimizer import run_one

        opt, hind = run_one(str(day), "optimizer"), run_one(str(day), "hindsight")
        bound = hind["bound_cash_yuan"]
        row["ratio"] = opt["cash_yuan"] / bound if bound and bound > 0 else None
        row["replan_p50_ms"] = opt["plan_s"]["p50"] * 1000
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, nargs="*", default=[8, 16, 32, 64])
    parser.add_argument("--vouchers", type=int, nargs="*", default=[5, 20, 80, 160])
    parser.add_argument("--requests", type=int, nargs="*", default=[4000, 16000])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--warm", type=float, default=6.0, help="hours the forecast learns first")
    parser.add_argument("--replans", type=int, default=12)
    parser.add_argument("--quality", action="store_true", help="also replay each point")
    parser.add_argument("--distinct", action="store_true", help="voucher clones open later: none pool")
    args = parser.parse_args()
    base_r, base_v, base_n = args.regions[0], args.vouchers[0], args.requests[0]
    points = [{"regions": r, "vouchers": base_v, "requests": base_n} for r in args.regions]
    points += [{"regions": base_r, "vouchers": v, "requests": base_n} for v in args.vouchers[1:]]
    points += [{"regions": base_r, "vouchers": base_v, "requests": n} for n in args.requests[1:]]
    kind = "distinct vouchers" if args.distinct else "voucher clones alike"
    table = Table(title=f"planner scale (seed {args.seed}, {kind}; re-plan CPU over {args.replans} re-plans)")
    heads = ("regions", "vouchers", "requests", "demand groups", "LP columns", "re-plan CPU p50 ms",
             "re-plan CPU max ms", "rank p50 us", "rank p99 us", "rank CPU p99 us", "opt/bound")  # fmt: skip
    for head in heads:
        table.add_column(head, justify="right")
    with tempfile.TemporaryDirectory(prefix="suanli-scale-") as tmp:
        for point in points:
            row = measure(point, seed=args.seed, warm_h=args.warm, replans=args.replans,
                          quality=args.quality, tmp=Path(tmp), distinct=args.distinct)  # fmt: skip
            table.add_row(
                str(row["regions"]), str(row["vouchers"]), f"{row['requests']:,}", str(row["groups"]),
                f"{row['columns']:,}", f"{row['cpu_p50_ms']:.0f}", f"{row['cpu_max_ms']:.0f}",
                f"{row['rank_p50_us']:.1f}", f"{row['rank_p99_us']:.1f}", f"{row['rank_cpu_p99_us']:.1f}",
                "-" if row["ratio"] is None else f"{row['ratio']:.3f}",
            )  # fmt: skip
    Console(width=200).print(table)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (1/5/15 min); command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # stopped early: no table, no traceback
        sys.exit(130)
