"""Platform batch benchmark: 1,000 lines, a 24 h window, a catalog whose platforms run batches at 50%.

    .venv/bin/python benchmarks/platform_batch.py [--lines 1000] [--seed 7]

The bundled catalog (vouchers removed: price and time alone decide) with
``batch_api: {price_factor: 0.5, window_h: 24}`` on every region, as Bailian, Ark and
SiliconFlow sell theirs; run twice, as bundled and with its off-peak windows and bands removed
(then the batch discount is the only one and the lines all go to a platform). The sim
platforms run in their own server (they outlive suanli, as a real platform does) on the same
manual virtual clock. suanli is started, the batch created
with the official openai SDK, and suanli stopped once its lines are submitted to the
platforms; one submission is then rolled back to "submitting" (what a kill -9 between the
platform's answer and our write leaves). A second suanli on the same ledger finishes the
batch while the driver moves the clock. Prints a table: lines answered, distinct custom ids,
ledger rows, platform batches created, and the cost against running every line live at list
price on the cheapest region that offers the model. Target: cost <= 0.55x; every line once.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.batch import MODEL, _lines  # noqa: E402
from suanli.config import Config, Limits, load_catalog  # noqa: E402
from suanli.optimizer import list_cost_yuan  # noqa: E402
from suanli.providers.sim import SimFleet  # noqa: E402
from suanli.router.core.clocks import VirtualClock  # noqa: E402
from suanli.router.core.limits import RequestLimits  # noqa: E402
from suanli.router.http.app import ROUTER, create_app  # noqa: E402
from suanli.router.http.workloads import WORKLOADS  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
SUBMIT = datetime(2026, 12, 1, 10, 0, tzinfo=TZ)
BATCH_API = {"price_factor": 0.5, "window_h": 24}


def _catalog(workdir: Path, urls: dict[str, str] | None = None, *, timed: bool = True) -> Config:
    """The bundled catalog, no vouchers, a batch API at every platform; ``timed=False`` drops its
    off-peak windows and bands, so that the platforms' batch discount is the only one."""
    catalog = load_catalog(environ={"SUANLI_LEDGER_URL": f"sqlite:///{workdir / 'ledger.db'}"})
    regions = []
    for region in catalog.regions:
        update: dict[str, Any] = {"batch_api": BATCH_API}
        if urls is not None:
            update["base_url"] = urls[region.id]
        row = region.model_dump(exclude_none=True) | update
        if not timed:
            untimed = ("off_peak", "bands")
            row["models"] = [{k: v for k, v in m.items() if k not in untimed} for m in row["models"]]
        regions.append(row)
    data = catalog.model_dump(exclude_none=True, by_alias=True) | {"regions": regions, "vouchers": []}
    return Config.model_validate(data)


async def _app(config: Config, clock: VirtualClock) -> tuple[web.AppRunner, web.Application, str]:
    app = create_app(config, clock=clock, sim_latency_scale=0.0)
    # As in benchmarks/batch.py: the executor keeps every region within its limits per virtual minute.
    app[ROUTER].limits = RequestLimits([r.model_copy(update={"limits": Limits()}) for r in config.regions])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, app, f"http://127.0.0.1:{port}/v1"


async def _run(count: int, seed: int, workdir: Path, *, timed: bool) -> dict[str, Any]:
    import openai

    clock = VirtualClock(SUBMIT, speed=0)
    fleet = SimFleet(_catalog(workdir, timed=timed), latency_scale=0.01, now_s=lambda: clock().timestamp())
    await fleet.start()
    config = _catalog(workdir, fleet.urls, timed=timed)
    started = time.perf_counter()
    try:
        runner, app, url = await _app(config, clock)
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            path = workdir / "input.jsonl"
            path.write_bytes(_lines(count, seed))
            uploaded = await client.files.create(file=path.open("rb"), purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            db = app[WORKLOADS].parts()[0]
            while (await client.batches.retrieve(batch.id)).status == "validating":
                await asyncio.sleep(0.05)
            while _unsent(db, batch.id):  # every platform's part sent and recorded
                await asyncio.sleep(0.05)
        await runner.cleanup()
        with sqlite3.connect(workdir / "ledger.db") as raw:  # the crash window: sent, not yet recorded
            raw.execute(
                "UPDATE wl_platform_batches SET state = 'submitting', platform_batch_id = NULL"
                " WHERE id = (SELECT MIN(id) FROM wl_platform_batches)"
            )
        runner, app, url = await _app(config, clock)
        async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            batch = await _finish(client, app, batch.id, clock)
            output = b""
            if batch.output_file_id:
                output = (await client.files.content(batch.output_file_id)).content
        usage = app[ROUTER].ledger.usage()
        await runner.cleanup()
        platform_batches = {}
        for region in config.regions:
            if region.batch_api is not None:
                async with openai.AsyncOpenAI(base_url=fleet.urls[region.id], api_key="x") as sdk:
                    platform_batches[region.id] = len((await sdk.batches.list()).data)
    finally:
        await fleet.stop()
    answered = [orjson.loads(line)["custom_id"] for line in output.splitlines() if line.strip()]
    return {
        "batch": batch,
        "answered": answered,
        "usage": usage,
        "platform_batches": {k: v for k, v in platform_batches.items() if v},
        "wall_s": time.perf_counter() - started,
        "config": config,
    }


def _unsent(db, batch_id: str) -> int:  # noqa: ANN001
    """Regions with lines for their batch API whose part is not yet recorded as submitted."""
    row = db.row(
        "SELECT COUNT(DISTINCT region) AS n FROM wl_batch_lines WHERE batch_id = ? AND state = 'platform'"
        " AND region NOT IN (SELECT region FROM wl_platform_batches"
        " WHERE batch_id = ? AND state = 'submitted')",
        (batch_id, batch_id),
    )
    return int(row["n"]) if row else 0


async def _finish(client, app: web.Application, batch_id: str, clock: VirtualClock):  # noqa: ANN001
    """Move the clock: to the next planned start when nothing runs, else a minute while platforms work."""
    db = app[WORKLOADS].parts()[0]
    batch = await client.batches.retrieve(batch_id)
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        state = db.row(
            "SELECT SUM(state = 'running') AS running, SUM(state = 'platform') AS platform,"
            " MIN(CASE WHEN state = 'pending' THEN start_s END) AS next"
            " FROM wl_batch_lines WHERE batch_id = ?",
            (batch_id,),
        )
        now_s = clock().timestamp()
        if state and not state["running"]:
            if state["next"] is not None and state["next"] > now_s:
                clock.set(datetime.fromtimestamp(state["next"], UTC))
            elif state["platform"]:
                clock.advance(60)
        await asyncio.sleep(0.05)
        batch = await client.batches.retrieve(batch_id)
    return batch


def _baseline_yuan(config: Config, usage) -> float:  # noqa: ANN001
    """Every line live at list price on the cheapest region offering the model (its reported tokens)."""
    total = 0.0
    for row in usage:
        served = config.region(row.region).offer(MODEL)
        ratio = served.token_ratio if served else 1.0
        inputs, outputs = row.prompt_tokens / ratio, row.completion_tokens / ratio
        total += min(
            list_cost_yuan(r.offer(MODEL), inputs, outputs, "batch", factor=1.0)
            for r in config.regions
            if r.offer(MODEL) is not None
        )
    return total


def _table(found: dict[str, Any], count: int, title: str):  # noqa: ANN202
    from rich.table import Table

    usage = found["usage"]
    cost = sum(u.cost_yuan for u in usage)
    base = _baseline_yuan(found["config"], usage)
    ids = Counter(found["answered"])
    rows = Counter(u.request_id for u in usage)
    where = Counter(u.region for u in usage)
    table = Table(title=f"{title}: {count} lines, 24 h window, submitted 10:00, one restart")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("batch status", found["batch"].status, "completed")
    table.add_row("answers / distinct custom ids", f"{sum(ids.values())} / {len(ids)}", f"{count} / {count}")
    ledger = f"{sum(rows.values())} / {len(rows)}"
    table.add_row("ledger rows / distinct requests", ledger, f"{count} / {count}")
    table.add_row("platform batches created", str(found["platform_batches"]), "one per region")
    table.add_row("lines by region", ", ".join(f"{k} {v}" for k, v in sorted(where.items())), "")
    table.add_row("suanli cost (yuan)", f"{cost:.4f}", "")
    table.add_row("live at list price, cheapest region (yuan)", f"{base:.4f}", "")
    table.add_row("cost / live at list price", f"{cost / base:.3f}" if base else "-", "<= 0.55")
    table.add_row("wall time (s)", f"{found['wall_s']:.1f}", "")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from rich.console import Console

    runs = ((True, "bundled catalog + batch APIs"), (False, "same, off-peak windows and bands removed"))
    for timed, title in runs:
        with tempfile.TemporaryDirectory(prefix="suanli-platform-batch-") as workdir:
            found = asyncio.run(_run(args.lines, args.seed, Path(workdir), timed=timed))
        Console().print(_table(found, args.lines, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
