"""Batch benchmark: a 5,000-line batch submitted at 10:00 local with a 24 h window, bundled catalog.

    .venv/bin/python benchmarks/batch.py [--lines 5000] [--seed 7]

Runs the real app (HTTP on 127.0.0.1, the bundled catalog's sim platforms, a SQLite
ledger in a temporary directory) on a manual virtual clock: the batch is uploaded and
created with the official openai SDK, and the executor plans and runs it exactly as in
production. The driver only moves the clock: when no line is running it jumps to the
next planned start, so a day of schedule takes seconds and every line starts at the
virtual time it was planned for. Prints where and when the lines ran, and the cost
against running every line at once (10:00) on the cheapest east region at list price,
twice: with the catalog's vouchers, and with none (where only price and time matter).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from suanli.config import Limits, load_catalog  # noqa: E402
from suanli.optimizer import list_cost_yuan, off_peak_active  # noqa: E402
from suanli.router.core.clocks import VirtualClock  # noqa: E402
from suanli.router.core.limits import RequestLimits  # noqa: E402
from suanli.router.http.app import ROUTER, create_app  # noqa: E402
from suanli.router.http.workloads import WORKLOADS  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
SUBMIT = datetime(2026, 12, 1, 10, 0, tzinfo=TZ)
MODEL = "deepseek-flash"
TOPICS = [
    "东数西算",
    "庆阳算力枢纽",
    "贵安数据中心",
    "中卫云基地",
    "和林格尔集群",
    "芜湖数据岛",
    "算力券",
    "峰谷电价",
]


def _lines(count: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        topic = rng.choice(TOPICS)
        prompt = f"请总结{topic}的第{i}份报告：" + "西部电价低，适合批量推理与训练。" * rng.randint(5, 60)
        out.append(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "max_tokens": rng.randint(50, 400),
                    "messages": [{"role": "user", "content": prompt}],
                },
            }
        )
    return b"\n".join(orjson.dumps(item) for item in out) + b"\n"


async def _run(count: int, seed: int, workdir: Path, *, vouchers: bool) -> None:
    import openai

    catalog = load_catalog(environ={"SUANLI_LEDGER_URL": f"sqlite:///{workdir / 'ledger.db'}"})
    if not vouchers:
        catalog = catalog.model_copy(update={"vouchers": ()})
    clock = VirtualClock(SUBMIT, speed=0)
    app = create_app(catalog, clock=clock, sim_latency_scale=0.0)
    # The live per-region limiter counts real seconds; on this clock a day passes in about a
    # minute, so it would see many virtual minutes' starts as one. The executor keeps every
    # region within its limits per *virtual* minute (the planner books them), which is what
    # this benchmark measures, so the real-time limiter is given unlimited regions here.
    unlimited = [r.model_copy(update={"limits": Limits()}) for r in catalog.regions]
    app[ROUTER].limits = RequestLimits(unlimited)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    workloads = app[WORKLOADS]
    try:
        started = time.perf_counter()
        path = workdir / "input.jsonl"
        path.write_bytes(_lines(count, seed))
        uploaded = await client.files.create(file=path.open("rb"), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while (batch := await client.batches.retrieve(batch.id)).status == "validating":
            await asyncio.sleep(0.05)
        planned_s = time.perf_counter() - started
        db = workloads.parts()[0]
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            state = db.row(
                "SELECT SUM(state = 'running') AS running, MIN(CASE WHEN state = 'pending'"
                " THEN start_s END) AS next FROM wl_batch_lines WHERE batch_id = ?",
                (batch.id,),
            )
            if (
                state
                and not state["running"]
                and state["next"] is not None
                and state["next"] > clock().timestamp()
            ):
                clock.set(datetime.fromtimestamp(state["next"], UTC))
            await asyncio.sleep(0.05)
            batch = await client.batches.retrieve(batch.id)
        wall_s = time.perf_counter() - started
        output = (await client.files.content(batch.output_file_id)).content if batch.output_file_id else b""
        rows = db.rows(
            "SELECT ran_region, ran_at, cash_yuan, cost_yuan FROM wl_batch_lines WHERE batch_id = ?"
            " AND ok = 1",
            (batch.id,),
        )
        usage = {u.request_id: u for u in app[ROUTER].ledger.usage()}
        _report(catalog, batch, rows, output, usage, planned_s, wall_s)
    finally:
        await client.close()
        await runner.cleanup()


def _report(catalog, batch, rows, output: bytes, usage, planned_s: float, wall_s: float) -> None:  # noqa: ANN001
    answered = [orjson.loads(line)["custom_id"] for line in output.splitlines() if line.strip()]
    counts = batch.request_counts
    print(
        f"batch {batch.id}: {batch.status}, {counts.completed}/{counts.total} completed, "
        f"{counts.failed} failed, {len(answered)} answers, {len(set(answered))} distinct custom_ids"
    )
    print(
        f"submitted {SUBMIT:%Y-%m-%d %H:%M} local, 24 h window; planned in {planned_s:.1f} s, "
        f"ran in {wall_s:.1f} s of wall time\n"
    )
    # (region, local hour) -> [lines, list yuan, cash yuan, first start, last start]
    cells: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, 0.0, None, None])
    for r in rows:
        local = datetime.fromtimestamp(r["ran_at"], TZ)
        cell = cells[(r["ran_region"], f"{local:%m-%d %H}")]
        cell[0] += 1
        cell[1] += r["cost_yuan"]
        cell[2] += r["cash_yuan"]
        cell[3] = min(cell[3] or local, local)
        cell[4] = max(cell[4] or local, local)
    print(
        f"{'region':<10} {'zone':<5} {'local start (first-last)':<26} {'lines':>6} "
        f"{'list yuan':>10} {'cash yuan':>10}"
    )
    zones = {r.id: r.zone for r in catalog.regions}
    for (region, _), (n, cost, cash, first, last) in sorted(
        cells.items(), key=lambda kv: (kv[0][1], kv[0][0])
    ):
        when = f"{first:%m-%d %H:%M:%S}-{last:%H:%M:%S}"
        print(f"{region:<10} {zones[region]:<5} {when:<26} {n:>6} {cost:>10.2f} {cash:>10.2f}")
    cash = sum(r["cash_yuan"] for r in rows)
    cost = sum(r["cost_yuan"] for r in rows)
    voucher_yuan = sum(u.voucher_yuan for u in usage.values())
    # Baseline: every line at 10:00 on the cheapest east region, list price, its reported tokens.
    east = [r for r in catalog.regions if r.zone == "east" and r.offer(MODEL)]
    baselines = {}
    for region in east:
        offer = region.offer(MODEL)
        off = off_peak_active(offer, SUBMIT, TZ)
        baselines[region.id] = sum(
            list_cost_yuan(
                offer,
                u.prompt_tokens / _ratio(catalog, u),
                u.completion_tokens / _ratio(catalog, u),
                "batch",
                off_peak=off,
            )
            for u in usage.values()
        )
    cheapest = min(baselines, key=baselines.__getitem__)
    base = baselines[cheapest]
    print()
    print(f"{'':<44} {'yuan':>10}")
    print(f"{'suanli: list cost of what ran':<44} {cost:>10.2f}")
    print(f"{'suanli: paid by vouchers':<44} {voucher_yuan:>10.2f}")
    print(f"{'suanli: cash':<44} {cash:>10.2f}")
    print(f"{f'baseline: all at 10:00 on {cheapest} (list price)':<44} {base:>10.2f}")
    if base > 0:
        print(f"{'suanli cash / baseline':<44} {cash / base:>10.1%}")
        print(f"{'suanli list cost / baseline':<44} {cost / base:>10.1%}")


def _ratio(catalog, row) -> float:  # noqa: ANN001
    region = catalog.region(row.region)
    offer = region.offer(row.model) if region else None
    return offer.token_ratio if offer else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for vouchers in (True, False):
        title = (
            "bundled catalog with its vouchers"
            if vouchers
            else "bundled catalog, vouchers removed (cash only)"
        )
        print(f"== {title} ==")
        with tempfile.TemporaryDirectory(prefix="suanli-batch-bench-") as workdir:
            asyncio.run(_run(args.lines, args.seed, Path(workdir), vouchers=vouchers))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
