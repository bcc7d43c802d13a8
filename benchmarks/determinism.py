"""Decisions on a quiet and a loaded machine: byte-identical, or the replay is not deterministic.

    .venv/bin/python benchmarks/determinism.py [--seeds 2 7] [--requests 1500] [--hours 8]

For each generated day (``scenario_gen.py``, with its shocks) and each planning policy,
``suanli simulate`` runs twice in separate processes with different hash seeds: once as the
machine is, once beside processes keeping every core busy. Prints whether the two
``--decisions`` files are byte-identical, their hashes and the two replays' wall times.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.scenario_gen import write_scenario  # noqa: E402


def _simulate(scenario: Path, policy: str, out: Path, hash_seed: str) -> float:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    cmd = [sys.executable, "-m", "suanli", "simulate", "--config", str(scenario / "config.yaml")]
    cmd += ["--trace", str(scenario / "trace.jsonl"), "--policy", policy, "--decisions", str(out), "--json"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=3600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[2, 7])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--hours", type=int, default=8)
    parser.add_argument("--policies", nargs="*", default=["optimizer", "hindsight"])
    args = parser.parse_args()
    table = Table(title="decisions on a quiet and a loaded machine")
    for column in ("seed", "policy", "identical", "sha256 (first 12)", "quiet s", "loaded s"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="suanli-determinism-") as tmp:
        for seed in args.seeds:
            day = write_scenario(Path(tmp) / f"seed-{seed}", seed, requests=args.requests, hours=args.hours)
            for policy in args.policies:
                quiet_file, loaded_file = Path(tmp) / "quiet.jsonl", Path(tmp) / "loaded.jsonl"
                quiet_s = _simulate(day, policy, quiet_file, "1")
                burn = [sys.executable, "-c", "while True: pass"]
                burners = [
                    subprocess.Popen(burn, stderr=subprocess.DEVNULL) for _ in range(os.cpu_count() or 1)
                ]
                try:
                    loaded_s = _simulate(day, policy, loaded_file, "2")
                finally:
                    for burner in burners:
                        burner.kill()
                        burner.wait()
                quiet, loaded = quiet_file.read_bytes(), loaded_file.read_bytes()
                table.add_row(
                    str(seed), policy, "yes" if quiet == loaded else "NO",
                    hashlib.sha256(quiet).hexdigest()[:12], f"{quiet_s:.1f}", f"{loaded_s:.1f}",
                )  # fmt: skip
    Console(width=160).print(table)
    print(f"machine: {os.cpu_count()} cores; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # stopped early: no table, no traceback
        sys.exit(130)
