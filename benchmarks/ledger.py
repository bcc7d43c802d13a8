"""Micro-benchmark of the ledger on a file DB: microseconds per reserve, settle, reserve+settle.

    .venv/bin/python benchmarks/ledger.py [--n 5000] [--synchronous NORMAL|FULL]

Each call is timed alone (perf_counter_ns around it), so p99 includes WAL checkpoints.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.config import Voucher  # noqa: E402
from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement  # noqa: E402


def _percentiles(samples_ns: list[int]) -> str:
    us = sorted(s / 1000 for s in samples_ns)
    p50 = statistics.median(us)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    p999 = us[min(len(us) - 1, int(len(us) * 0.999))]
    return (f"p50 {p50:7.1f} us   p99 {p99:7.1f} us   p99.9 {p999:7.1f} us   max {us[-1]:8.1f} us"
            f"   mean {statistics.fmean(us):6.1f} us")


def _request(i: int, voucher_id: str | None) -> HoldRequest:
    return HoldRequest(request_id=f"r{i}", region="wuhan", model="deepseek-v3", work_class="interactive",
                       origin="east", voucher_id=voucher_id, voucher_units=2000.0)


def _settlement() -> Settlement:
    return Settlement(prompt_tokens=900, completion_tokens=300, tokens=1200, cost_yuan=0.0042, cash_yuan=0.0,
                      voucher_units=1200.0, voucher_yuan=0.0042, latency_ms=420.0, ttft_ms=180.0)


def run(n: int, synchronous: str) -> None:
    voucher = Voucher(id="wuhan-tokens", region="wuhan", kind="tokens", amount=1e12)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.open(f"sqlite:///{tmp}/bench.db", [voucher], clock=lambda: datetime.now(UTC))
        ledger._conn.execute(f"PRAGMA synchronous={synchronous}")  # bench only: compare durability costs
        warm = [ledger.reserve(_request(i, "wuhan-tokens")) for i in range(200)]
        for hold in warm:
            ledger.settle(hold.id, _settlement())
        reserve_ns, settle_ns, both_ns = [], [], []
        s = _settlement()
        for i in range(n):
            t0 = time.perf_counter_ns()
            hold = ledger.reserve(_request(i, "wuhan-tokens"))
            t1 = time.perf_counter_ns()
            ledger.settle(hold.id, s)
            t2 = time.perf_counter_ns()
            reserve_ns.append(t1 - t0)
            settle_ns.append(t2 - t1)
            both_ns.append(t2 - t0)
        cash_ns = []
        for i in range(n // 5):
            t0 = time.perf_counter_ns()
            ledger.reserve(_request(i, None))
            cash_ns.append(time.perf_counter_ns() - t0)
        ledger.close()
    print(f"ledger on a file DB, WAL, synchronous={synchronous}, n={n}")
    print(f"  reserve          {_percentiles(reserve_ns)}")
    print(f"  settle           {_percentiles(settle_ns)}")
    print(f"  reserve+settle   {_percentiles(both_ns)}")
    print(f"  reserve (cash)   {_percentiles(cash_ns)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = parser.parse_args()
    run(args.n, args.synchronous)


if __name__ == "__main__":
    main()
