"""Every benchmark starts from a fresh clone: no ../shared, scenarios from benchmarks/scenarios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_each_benchmark_parses_its_arguments(script: Path):
    result = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "../shared" not in result.stdout


def test_the_scenarios_live_in_the_repository():
    scenarios = ROOT / "benchmarks" / "scenarios"
    assert (scenarios / "README.md").is_file()
    for name in ("cityday", "expiry", "offpeak", "peaks", "scarcity", "shocks", "tokenizer"):
        assert (scenarios / name / "config.yaml").is_file() and (scenarios / name / "trace.jsonl").is_file()


def test_the_optimizer_benchmark_replays_a_scenario_folder_and_lists_what_it_cannot_read(tmp_path: Path):
    (tmp_path / "sample-day").symlink_to(ROOT / "examples" / "sample-day")
    broken = tmp_path / "guessed"  # a trace with a guessed field name: listed, not replayed as 0 tokens
    broken.mkdir()
    (broken / "config.yaml").symlink_to(ROOT / "examples" / "sample-day" / "config.yaml")
    lines = (ROOT / "examples" / "sample-day" / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    (broken / "trace.jsonl").write_text("\n".join([lines[0], lines[1].replace('"input"', '"input_tokens"')]))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "optimizer.py"),
            "--scenarios",
            str(tmp_path),
            "--markdown",
            "--no-tariffs",  # the generated tariff days take minutes
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| sample-day | 40 |" in result.stdout
    assert "guessed: not supported by this build: line 2:" in result.stderr
