"""Platform batch APIs: lines a platform runs at its batch price, answered and charged exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from suanli.config import Config
from suanli.optimizer import charge_reported
from suanli.providers.sim import SimFleet
from suanli.router.core.clocks import VirtualClock
from suanli.router.http.workloads import WORKLOADS
from tests.harness import running_proxy, small_config
from tests.integration.workload_helpers import TEN_AM, batch_file, jsonl, wait_for

pytestmark = pytest.mark.timeout(90)
BATCH_API = {"price_factor": 0.5, "window_h": 24}


def _config(tmp_path: Path, *, base_url: str | None = None) -> Config:
    """small_config whose qingyang (the cheapest, no off-peak) also runs batches at half price."""
    base = small_config(tmp_path)
    regions: list[dict[str, Any]] = [r.model_dump(exclude_none=True) for r in base.regions]
    west = next(r for r in regions if r["id"] == "qingyang")
    west["batch_api"] = BATCH_API
    if base_url is not None:
        west["base_url"] = base_url
    return small_config(tmp_path, regions=regions, vouchers=[])


def _client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def _batch(client: openai.OpenAI, path: Path, window: str = "24h"):
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window=window  # type: ignore[arg-type]
    )


def _until(client: openai.OpenAI, batch_id: str, *statuses: str):
    return wait_for(
        lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b, what=f"status {statuses}"
    )


def _parts(proxy) -> list[dict]:
    db = proxy._runner.app[WORKLOADS].parts()[0]
    return db.rows("SELECT * FROM wl_platform_batches")


def _batch_cost(config: Config, usage_rows) -> float:
    offer = config.region("qingyang").offer("deepseek-flash")
    return sum(
        charge_reported(
            offer, prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, work_class="batch",
            factor=0.5,
        ).cost_yuan
        for u in usage_rows
    )


def test_lines_go_to_the_platform_batch_at_its_price_once_each(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    config = _config(tmp_path)
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        batch = _batch(client, batch_file(tmp_path, 12))
        done = _until(client, batch.id, "completed")
        output = jsonl(client.files.content(done.output_file_id).text)
        usage = proxy.call(lambda r: r.ledger.usage())
        parts = _parts(proxy)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(12))
    assert Counter(u.request_id for u in usage) == Counter(f"{batch.id}-{i}" for i in range(12))
    assert {u.region for u in usage} == {"qingyang"} and len(parts) == 1
    # Billed at the batch price: half of qingyang's list price, to the yuan the ledger holds.
    assert sum(u.cost_yuan for u in usage) == pytest.approx(_batch_cost(config, usage), rel=1e-9)
    assert all(o["response"]["body"]["usage"]["prompt_tokens"] > 0 for o in output)


def test_a_short_window_keeps_the_lines_here(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        batch = _batch(client, batch_file(tmp_path, 3), window="1h")
        clock.advance(3600)
        done = _until(client, batch.id, "completed", "expired")
        assert _parts(proxy) == []
        assert done.request_counts.completed + done.request_counts.failed == 3


class _Sims:
    """qingyang's platform in its own thread, outliving the proxies (a real platform does)."""

    def __init__(self, config: Config, clock: VirtualClock) -> None:
        self._loop = asyncio.new_event_loop()
        region = config.region("qingyang")
        # The batch takes 0.05 s a line x 10 000 of the platform's (virtual) time: hours, not instant.
        self.fleet = SimFleet([region], latency_scale=10_000.0, now_s=lambda: clock().timestamp())
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(30)

    @property
    def url(self) -> str:
        return self.fleet.urls["qingyang"]

    def batches(self) -> int:
        with openai.OpenAI(base_url=self.url, api_key="x", max_retries=0) as sdk:
            return len(sdk.batches.list().data)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_a_restart_between_submitting_and_recording_adopts_the_platform_batch(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    seed = _config(tmp_path)
    sims = _Sims(seed, clock)
    try:
        config = _config(tmp_path, base_url=sims.url)
        with running_proxy(config, clock=clock) as proxy:
            client = _client(proxy)
            batch = _batch(client, batch_file(tmp_path, 6))
            wait_for(lambda: [p for p in _parts(proxy) if p["state"] == "submitted"], what="a submitted part")
        # What a kill -9 right after the platform created its batch leaves: the part not yet recorded.
        with sqlite3.connect(tmp_path / "ledger.db") as db:
            db.execute("UPDATE wl_platform_batches SET state = 'submitting', platform_batch_id = NULL")
        with running_proxy(config, clock=clock) as proxy:
            client = _client(proxy)
            clock.advance(2 * 3600)
            done = _until(client, batch.id, "completed")
            output = jsonl(client.files.content(done.output_file_id).text)
            usage = proxy.call(lambda r: r.ledger.usage())
        assert sims.batches() == 1  # adopted by its metadata, not submitted twice
        assert Counter(o["custom_id"] for o in output) == Counter(f"req-{i}" for i in range(6))
        assert Counter(u.request_id for u in usage) == Counter(f"{batch.id}-{i}" for i in range(6))
    finally:
        sims.stop()
