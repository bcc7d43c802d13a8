"""What watching costs: per-request metric bookkeeping, /metrics rendering, /admin/status refreshes.

    .venv/bin/python benchmarks/status.py [--rows 20000] [--calls 100000]

The ledger is a real SQLite file filled with ``--rows`` usage rows of the bundled catalog
(today, spread over the last hours); the status board is the one ``GET /admin/status`` uses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.config import load_catalog  # noqa: E402
from suanli.router.core.metrics import MetricsBook, render_metrics  # noqa: E402
from suanli.router.core.results import Routing  # noqa: E402
from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement  # noqa: E402
from suanli.router.status.feed import UsageFeed  # noqa: E402


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _fill(ledger: Ledger, clock: _Clock, rows: int, start: datetime, regions: list[str]) -> None:
    step = timedelta(seconds=min(20.0, 3 * 3600 / max(rows, 1)))
    for i in range(rows):
        clock.at = start + step * i
        region = regions[i % len(regions)]
        hold = ledger.reserve(
            HoldRequest(
                request_id=f"r{i}",
                region=region,
                model="deepseek-flash",
                work_class="batch" if i % 3 == 0 else "interactive",
                origin="east",
                voucher_id=None,
                voucher_units=0,
            )
        )
        ledger.settle(
            hold.id,
            Settlement(
                prompt_tokens=900,
                completion_tokens=300,
                tokens=1200,
                cost_yuan=0.004,
                cash_yuan=0.004,
                voucher_units=0.0,
                voucher_yuan=0.0,
                latency_ms=420.0,
                ttft_ms=180.0,
            ),
        )


def _time_us(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(samples), max(samples)


def run(rows: int, calls: int) -> None:
    config = load_catalog()
    regions = [r.id for r in config.regions if r.offer("deepseek-flash") is not None]
    book = MetricsBook()
    routing = Routing(
        request_id="r",
        region="wuhan",
        model="deepseek-flash",
        work_class="interactive",
        origin="east",
        voucher="wuhan-tokens-launch",
        cash_yuan=0.0,
        cost_yuan=0.004,
        voucher_yuan=0.004,
        voucher_units=1200.0,
        prompt_tokens=900,
        completion_tokens=300,
    )
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        book.settled(routing, latency_s=0.42, ttft_s=0.18)
    settled_us = (time.perf_counter_ns() - t0) / 1000 / calls

    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        clock = _Clock(now - timedelta(hours=3))
        ledger = Ledger.open(f"sqlite:///{tmp}/bench.db", config.vouchers, clock=clock)
        _fill(ledger, clock, rows, clock.at, regions)
        clock.at = now
        feed = UsageFeed(config)
        t0 = time.perf_counter()
        feed.refresh(ledger, now)
        first_ms = (time.perf_counter() - t0) * 1000
        idle_us, _ = _time_us(lambda: feed.refresh(ledger, now), 50)
        _fill(ledger, clock, 100, now, regions)
        t0 = time.perf_counter()
        feed.refresh(ledger, now)
        hundred_ms = (time.perf_counter() - t0) * 1000
        vouchers = [
            {
                "id": s.id,
                "region": s.region,
                "kind": s.kind,
                "available": s.available,
                "spent": s.spent,
                "amount": s.amount,
            }
            for s in ledger.vouchers()
        ]
        ledger.close()
    for i in range(len(regions)):
        book.settled(
            Routing(
                request_id="r",
                region=regions[i],
                model="deepseek-flash",
                work_class="batch",
                origin="east",
                voucher=None,
                cash_yuan=0.01,
                cost_yuan=0.01,
            ),
            latency_s=1.0,
            ttft_s=0.3,
        )
    health = {"state": "ok", "ejected_until": None, "ejections": 0}
    entries = {r: {"zone": "east", "health": health, "in_flight": 0} for r in regions}
    render_us, _ = _time_us(lambda: render_metrics(book, vouchers=vouchers, regions=entries), 50)

    print(f"{'measure':<52} {'value':>12}")
    print(f"{'MetricsBook.settled per request':<52} {settled_us:>9.2f} us")
    print(f"{'/metrics render (8 regions, 4 vouchers)':<52} {render_us / 1000:>9.2f} ms")
    print(f"{f'status feed first refresh ({rows:,} rows, greedy replay)':<52} {first_ms:>9.1f} ms")
    print(f"{'status feed refresh, nothing new':<52} {idle_us / 1000:>9.2f} ms")
    print(f"{'status feed refresh, 100 new rows':<52} {hundred_ms:>9.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=100000)
    args = parser.parse_args()
    run(args.rows, args.calls)


if __name__ == "__main__":
    main()
