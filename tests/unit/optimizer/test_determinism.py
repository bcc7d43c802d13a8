"""A replay's decisions are byte-identical run to run.

No wall clock decides a replay's plan (``router/simulate/engine.py`` solves every LP to
completion, ``plan.NO_LIMIT``; hindsight's rounding runs under a deterministic work limit),
so the same config and trace give the same decisions file. Two ``suanli simulate``
processes, each with its own hash seed (set iteration order differs). The same two runs
with the other core kept busy are ``benchmarks/determinism.py``'s: a test is not the place
to load the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenario_gen import write_scenario
from suanli.config import load_config
from tests.unit.optimizer.checker import check_decisions

ROOT = Path(__file__).resolve().parents[3]


def _simulate(scenario: Path, policy: str, out: Path, hash_seed: str) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    cmd = [sys.executable, "-m", "suanli", "simulate", "--config", str(scenario / "config.yaml")]
    cmd += ["--trace", str(scenario / "trace.jsonl"), "--policy", policy, "--decisions", str(out), "--json"]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    return out.read_bytes()


@pytest.mark.parametrize("policy", ["optimizer", "hindsight"])
def test_two_replays_give_identical_decisions(policy: str, tmp_path: Path) -> None:
    # seed 2: 18 vouchers, an outage, a price spike, a cut and a top-up, two training jobs
    scenario = write_scenario(tmp_path / "day", 2, requests=400, hours=4)
    first = _simulate(scenario, policy, tmp_path / "first.jsonl", "1")
    second = _simulate(scenario, policy, tmp_path / "second.jsonl", "2")
    assert first == second
    config = load_config(scenario / "config.yaml")
    lines = (scenario / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    check = check_decisions(config, lines, first.decode().splitlines())
    assert check.violations == []
