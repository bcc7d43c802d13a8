"""What-if on a day of demo traffic: how long the default set takes, and the base replay against the ledger.

    .venv/bin/python benchmarks/whatif.py [--scenario cityday] [--minutes 4] [--thin 4] [--day DIR]

The day: a public scenario (``benchmarks/scenarios/NAME``) driven through the live proxy, the
sims, the SQLite ledger and the re-planner by ``live_replay`` (one request in ``--thin`` on a
config scaled to match, as ``benchmarks/live_replay.py`` does; training left out), its ledger
and config kept in ``--day DIR`` (a fresh temporary folder by default; an existing one is reused
and not replayed again). Then ``suanli whatif --json`` runs on that ledger's day as a user would
run it (a subprocess, start-up included), and the table shows its wall time (target < 30 s)
with its CPU time (the CLI and its replay processes: the wall time depends on the machine's
load, printed beside it), the ledger's cash for the day, the base replay's (target: within
3%) and each scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from suanli.router.ops.live_replay import run_live  # noqa: E402
from suanli.router.ops.replay_day import cut, load_scenario, thin  # noqa: E402


def _replay_day(args: argparse.Namespace, folder: Path, console: Console) -> tuple[str, str]:
    config, trace = load_scenario(ROOT / "benchmarks" / "scenarios" / args.scenario, ledger_dir=folder)
    config, trace = thin(config, cut(trace, args.hours), args.thin)
    with console.status(f"{args.scenario}: the live replay, about {args.minutes:g} min"):
        asyncio.run(run_live(config, trace, minutes=args.minutes))
    (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    since = trace.start
    until = since + timedelta(hours=args.hours or 24)
    (folder / "period.json").write_text(json.dumps({"since": since.isoformat(), "until": until.isoformat()}))
    return since.isoformat(), until.isoformat()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="cityday")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall minutes of the live replay")
    parser.add_argument("--thin", type=int, default=4, help="one request in N on a config scaled by 1/N")
    parser.add_argument("--hours", type=float, help="only the day's first hours (a quick look)")
    parser.add_argument("--day", type=Path, help="keep (or reuse) the replayed day's ledger here")
    args = parser.parse_args()
    console = Console(width=200)
    folder = args.day or Path(tempfile.mkdtemp(prefix="suanli-whatif-"))
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "period.json").is_file():
        period = json.loads((folder / "period.json").read_text())
        since, until = period["since"], period["until"]
    else:
        since, until = _replay_day(args, folder, console)
    command = [
        str(Path(sys.executable).parent / "suanli"),
        "whatif",
        "--config",
        str(folder / "config.yaml"),
        "--since",
        since,
        "--until",
        until,
        "--json",
    ]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CLI and its replay processes
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = max(load, os.getloadavg()[0])
    if done.returncode != 0:
        console.print(done.stderr)
        return 1
    result = json.loads(done.stdout)
    base = result["base"]
    table = Table(
        title=f"suanli whatif on a day of demo traffic ({args.scenario}, thin {args.thin}),"
        f" {result['requests']:,} requests: {wall_s:.1f} s wall (target < 30 s), {cpu_s:.1f} s CPU,"
        f" load average {load:.1f} on {os.cpu_count()} cores"
    )
    for column in (
        "scenario",
        "cash yuan",
        "change",
        "rejected",
        "deadline misses",
        "classes hurt",
        "replay s",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "classes hurt") else "right")
    table.add_row("ledger (what was paid)", f"{result['ledger_cash_yuan']:.4f}", "", "", "", "", "")
    served = result.get("ledger_cash_served_yuan")
    if served:
        share = base["cash_yuan"] / served - 1
        row = ("ledger, requests the base served", f"{served:.4f}", f"base {share:+.2%}")
        table.add_row(*row, "", "", "", "")
    table.add_row(
        "base replay",
        f"{base['cash_yuan']:.4f}",
        f"{result['base_vs_ledger'] - 1:+.2%} vs ledger",
        str(base["rejected"]),
        str(base["deadline_misses"]),
        "",
        f"{base['wall_s']:.1f}",
    )
    for s in result["scenarios"]:
        table.add_row(
            s["name"],
            f"{s['cash_yuan']:.4f}",
            f"{s['change_yuan']:+.4f}",
            str(s["rejected"]),
            str(s["deadline_misses"]),
            ", ".join(s["hurt_classes"]) or "-",
            f"{s['wall_s']:.1f}",
        )
    console.print(table)
    console.print(f"day kept in {folder} (pass --day {folder} to time it again without the live replay)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
