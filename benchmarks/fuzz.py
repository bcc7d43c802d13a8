"""The long schemathesis run: OpenAI's spec against every operation suanli serves, >= 10,000 cases.

    .venv/bin/python benchmarks/fuzz.py [--examples 400] [--spec tests/data/openai-openapi/openapi.yaml]

It runs the suite's fuzz test (``tests/integration/test_fuzz_openapi.py``) with every schemathesis
phase (examples, coverage, fuzzing), positive and negative generation, random seeds and
``--examples`` per operation, then prints one table: cases by status, and every 500 (the target
is none). Exit status 1 when a case got a 500 or broke the OpenAI error shape.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=400, help="hypothesis examples per operation")
    parser.add_argument("--spec", default=str(ROOT / "tests/data/openai-openapi/openapi.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {
            **os.environ,
            "SUANLI_OPENAPI": args.spec,
            "SUANLI_FUZZ_EXAMPLES": str(args.examples),
            "SUANLI_FUZZ_LONG": "1",
            "SUANLI_FUZZ_REPORT": str(report),
        }
        started = time.perf_counter()
        test = "tests/integration/test_fuzz_openapi.py"
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT, env=env
        )
        seconds = time.perf_counter() - started
        if not report.is_file():
            print("fuzz: the run wrote no report (was the spec found?)", file=sys.stderr)
            return 1
        summary = json.loads(report.read_text())
    outcomes = summary["outcomes"]
    statuses = sorted((k, v) for k, v in outcomes.items() if k.isdigit())
    errors_500 = sorted((k, v) for k, v in outcomes.items() if k.startswith("500 "))
    print(f"\n| schemathesis cases | seconds | {' | '.join(k for k, _ in statuses)} | 500s |")
    print(f"|---:|---:|{'---:|' * len(statuses)}---:|")
    cells = " | ".join(f"{v:,}" for _, v in statuses)
    print(f"| {summary['cases']:,} | {seconds:.0f} | {cells} | {sum(v for _, v in errors_500)} |")
    for where, count in errors_500:
        print(f"  {count} x {where}")
    return 0 if run.returncode == 0 and not errors_500 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # stopped early: no table, no traceback
        print("fuzz: stopped before the end; no figures", file=sys.stderr)
        sys.exit(130)
