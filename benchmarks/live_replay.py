"""Live replay vs simulate: each public scenario driven through the real stack, one table.

    .venv/bin/python benchmarks/live_replay.py [--scenarios benchmarks/scenarios] [--only cityday]
                                               [--minutes 5] [--stream-every 10] [--hours H] [--json FILE]

For every scenario (a ``config.yaml`` and a ``trace.jsonl``), ``suanli.router.ops.live_replay``
runs the day through the HTTP proxy, the simulated platforms at their real latencies, the
SQLite ledger, the live re-planner and the batch executor on an accelerated clock, and
``suanli simulate --policy optimizer`` on the same config and trace; training requests are
left out of both. Columns: cash of each side and their ratio (target <= 1.03), interactive
rejections (target: within +1% of simulate's), SLO misses over the streamed answers whose
first token the client timed, batch deadline misses (target 0), where each class went, and
the wall time. Scenarios using rules this build lacks are listed as not supported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from suanli.config import ConfigError  # noqa: E402
from suanli.router.ops.live_replay import run_live  # noqa: E402
from suanli.router.ops.replay_day import compare, cut, load_scenario, simulate_side, thin  # noqa: E402

DEFAULT_SCENARIOS = ROOT / "benchmarks" / "scenarios"


def _shares(where: dict) -> str:
    parts = []
    for work_class, regions in sorted(where.items()):
        total = sum(regions.values()) or 1
        top = ", ".join(f"{r} {100 * n / total:.0f}%" for r, n in regions.most_common(3))
        parts.append(f"{work_class[:5]}: {top}")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, default=DEFAULT_SCENARIOS)
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall minutes per scenario day")
    parser.add_argument("--stream-every", type=int, default=10, help="stream one interactive request in N")
    parser.add_argument("--hours", type=float, help="replay only the first hours of each day (a quick look)")
    parser.add_argument("--pace", type=float, default=0.1, help="sims' output pace, times ms_per_token")
    parser.add_argument("--thin", type=int, default=4,
                        help="replay one request in N on a config scaled by 1/N (1: the whole day)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.scenarios.is_dir():
        print(f"no scenarios at {args.scenarios}: pass --scenarios DIR", file=sys.stderr)
        return 2
    names = sorted(p.name for p in args.scenarios.iterdir() if (p / "trace.jsonl").is_file())
    names = [n for n in names if not args.only or n in args.only]
    console = Console(width=200)
    title = "Live replay (real proxy, sims, ledger, re-planner) vs suanli simulate --policy optimizer"
    table = Table(title=title)
    for column in ("scenario", "cash live", "cash sim", "live/sim", "rej live", "rej sim", "slo miss live",
                   "miss live", "miss sim", "where (live)", "where (sim)", "wall s"):
        table.add_column(column, justify="left" if column.startswith(("scenario", "where")) else "right")
    figures = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=len(names))
        for name in names:
            progress.update(task, description=f"{name}: live, about {args.minutes:g} min")
            try:
                config, trace = load_scenario(args.scenarios / name)
                config, trace = thin(config, cut(trace, args.hours), args.thin)
                if trace.events:
                    raise ValueError("trace events (outages, cuts, price spikes) are not driven live yet")
            except (ConfigError, ValueError) as exc:
                table.add_row(name, *["-"] * 10, f"not supported: {str(exc)[:60]}")
                progress.advance(task)
                continue
            live = asyncio.run(run_live(config, trace, minutes=args.minutes, stream_every=args.stream_every,
                                        pace=args.pace))
            progress.update(task, description=f"{name}: simulate")
            paper = simulate_side(config, trace)
            row = compare(live.side, paper)
            errors = {str(k): v for k, v in live.errors.items()}
            row.update(wall_s=round(live.wall_s, 1), speed=round(live.speed, 1), errors=errors,
                       training_skipped=live.skipped_training,
                       cash_by_class_live={k: round(v, 4) for k, v in live.side.cash_by_class.items()},
                       cash_by_class_sim={k: round(v, 4) for k, v in paper.cash_by_class.items()},
                       where_live={k: dict(v) for k, v in live.side.where.items()},
                       where_sim={k: dict(v) for k, v in paper.where.items()})
            figures[name] = row
            table.add_row(name, f"{row['cash_live']:.3f}", f"{row['cash_sim']:.3f}", f"{row['ratio']:.3f}",
                          str(row["rejected_live"]), str(row["rejected_sim"]), str(row["slo_live"]),
                          str(row["miss_live"]), str(row["miss_sim"]), _shares(live.side.where),
                          _shares(paper.where), f"{live.wall_s:.0f}")
            progress.advance(task)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
