"""Variant scenarios derived from a replay scenario, to check the optimizer is not fitted to it.

    .venv/bin/python benchmarks/scenario_variants.py SCENARIO_DIR OUT_DIR [--seed 7]

Each variant changes one thing the optimizer must not have been tuned to, and writes
``OUT_DIR/<scenario>-<variant>/{config.yaml,trace.jsonl}``:

- ``west``: a third of the requests come from the west (latency rules change which
  regions interactive traffic may use);
- ``slo``: the interactive latency SLO 60 ms looser (a western region becomes eligible);
- ``vouchers``: every voucher's amount scaled by 0.5-1.5, and its expiry moved by -8..+8 h;
- ``noon``: the trace starts at 12:00 local instead of midnight (the day is seen from its
  middle: the forecast starts cold in the busy hours);
- ``flat``: arrival times redrawn uniformly over the day (no working-day shape at all).

``benchmarks/optimizer.py --variants`` runs them beside the originals.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import yaml

__all__ = ["VARIANTS", "write_variant"]

_DAY_S = 86400.0

# variant name -> (config dict, trace header, trace rows, rng) -> (config, header, rows)
Scenario = tuple[dict, dict, list[dict]]
Variant = Callable[[dict, dict, list[dict], random.Random], Scenario]


def _west(config: dict, header: dict, rows: list[dict], rng: random.Random) -> Scenario:
    for row in rows:
        if rng.random() < 1 / 3:
            row["origin"] = "west"
    return config, header, rows


def _slo(config: dict, header: dict, rows: list[dict], rng: random.Random) -> Scenario:
    interactive = config.setdefault("classes", {}).setdefault("interactive", {})
    interactive["latency_slo_ms"] = interactive.get("latency_slo_ms", 400) + 60
    return config, header, rows


def _vouchers(
    config: dict, header: dict, rows: list[dict], rng: random.Random
) -> tuple[dict, dict, list[dict]]:
    for voucher in config.get("vouchers", []):
        amount = voucher["amount"] * rng.uniform(0.5, 1.5)
        voucher["amount"] = round(amount) if voucher["kind"] == "tokens" else round(amount, 2)
        if voucher.get("expires"):
            moved = datetime.fromisoformat(str(voucher["expires"])) + timedelta(hours=rng.uniform(-8, 8))
            voucher["expires"] = moved.replace(minute=0, second=0, microsecond=0).isoformat()
    return config, header, rows


def _noon(config: dict, header: dict, rows: list[dict], rng: random.Random) -> Scenario:
    # rotate the day by 12 hours so the trace still covers one whole day, from noon
    for row in rows:
        row["t"] = round((row["t"] + _DAY_S / 2) % _DAY_S, 3)
    rows.sort(key=lambda row: row["t"])
    start = datetime.fromisoformat(header["start"]) - timedelta(hours=12)
    return config, {**header, "start": start.isoformat()}, rows


def _flat(config: dict, header: dict, rows: list[dict], rng: random.Random) -> Scenario:
    for row in rows:
        row["t"] = round(rng.uniform(0, _DAY_S), 3)
    rows.sort(key=lambda row: row["t"])
    return config, header, rows


VARIANTS: dict[str, Variant] = {
    "west": _west,
    "slo": _slo,
    "vouchers": _vouchers,
    "noon": _noon,
    "flat": _flat,
}


def write_variant(scenario: Path, name: str, out_dir: Path, *, seed: int = 7) -> Path:
    """Write variant ``name`` of ``scenario`` under ``out_dir``; its directory."""
    config = yaml.safe_load((scenario / "config.yaml").read_text(encoding="utf-8"))
    lines = (scenario / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    header, rows = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
    rng = random.Random(f"{seed}-{scenario.name}-{name}")
    config, header, rows = VARIANTS[name](config, header, rows, rng)
    target = out_dir / f"{scenario.name}-{name}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    body = [json.dumps(header)] + [json.dumps(row) for row in rows]
    (target / "trace.jsonl").write_text("\n".join(body) + "\n", encoding="utf-8")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    args = parser.parse_args()
    for name in args.only:
        print(write_variant(args.scenario, name, args.out_dir, seed=args.seed), file=sys.stdout)


if __name__ == "__main__":
    main()
