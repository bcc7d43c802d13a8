"""The interactive rule on real latency: long whole answers keep their regions; a slow region
loses interactive work and regains it once it recovers (DESIGN.md "The interactive rule, live").

The sims run at their real latency (scale 1), so every time here is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from suanli.router.ops.monitor_view import routing_notes
from tests.harness import ProxyThread, running_proxy, small_config

pytestmark = pytest.mark.timeout(90)

NO_PROBES = {"probes": {"enabled": False}}
QUESTION = [{"role": "user", "content": "请详细介绍东数西算工程的八大枢纽节点和十大集群。"}]


def _region(rid: str, price: float, *, zone: str, ttft_ms: float, ms_per_token: float) -> dict[str, Any]:
    return {
        "id": rid, "zone": zone, "provider": "sim", "rtt_ms": {"east": 10 if zone == "east" else 40},
        "ttft_ms": ttft_ms, "capabilities": ["chat"], "sim": {"ms_per_token": ms_per_token},
        "models": [{"name": "deepseek-flash", "price": {"input": price, "output": 4 * price}}],
    }


def _faults(proxy: ProxyThread, region: str, **knobs: Any) -> None:
    url = proxy.call(lambda router: router.base_url(region)).removesuffix("/v1")
    if knobs:
        httpx.post(f"{url}/sim/faults", json=knobs, timeout=10).raise_for_status()
    else:
        httpx.delete(f"{url}/sim/faults", timeout=10).raise_for_status()


def test_long_non_streamed_interactive_answers_keep_their_east_regions(tmp_path: Path):
    # Each answer takes 60 ms to its first token and ~1.2 s in all: over the 400 ms SLO if a
    # whole answer's time were read as its time to first token.
    regions = [
        _region("wuhan", 1.0, zone="east", ttft_ms=60, ms_per_token=3),
        _region("shanghai", 1.2, zone="east", ttft_ms=60, ms_per_token=3),
        _region("guiyang", 0.5, zone="west", ttft_ms=600, ms_per_token=3),
    ]
    config = small_config(tmp_path, regions=regions, vouchers=[],
                          health={**NO_PROBES, "latency": {"min_samples": 4}})
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        async def run() -> list[tuple[int, str | None]]:
            client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, timeout=60)
            gate = asyncio.Semaphore(8)

            async def one(i: int) -> tuple[int, str | None]:
                async with gate:
                    try:
                        raw = await client.chat.completions.with_raw_response.create(
                            model="deepseek-flash", messages=QUESTION, max_tokens=300 + 20 * (i % 10),
                            stream=i % 4 == 0,  # a few streams too: they measure the output pace
                        )
                    except openai.APIStatusError as exc:
                        return exc.status_code, None
                    if i % 4 == 0:
                        async for _ in raw.parse():
                            pass
                    else:
                        assert len(raw.parse().choices[0].message.content) > 300
                    return raw.status_code, raw.headers["x-suanli-region"]

            try:
                return await asyncio.gather(*(one(i) for i in range(48)))
            finally:
                await client.close()

        results = asyncio.run(run())
        status = proxy.call(lambda router: router.region_stats())
    assert Counter(code for code, _ in results) == {200: 48}
    assert {region for _, region in results} == {"wuhan"}  # the cheapest east region, all along
    wuhan = status["wuhan"]
    # the status page tells a first token from a whole answer
    assert wuhan["ttft_ms"]["p95"] < 250 < wuhan["total_ms"]["p50"]


def test_a_region_made_slow_loses_interactive_work_and_regains_it_after_recovery(tmp_path: Path):
    regions = [
        _region("wuhan", 1.0, zone="east", ttft_ms=40, ms_per_token=0),
        _region("shanghai", 1.5, zone="east", ttft_ms=40, ms_per_token=0),
    ]
    config = small_config(tmp_path, regions=regions, vouchers=[],
                          health={**NO_PROBES, "latency": {"min_samples": 3, "max_age_s": 3}})
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, timeout=30)

        def served() -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="deepseek-flash", messages=QUESTION, max_tokens=20, stream=True
            )
            for _ in raw.parse():
                pass
            return raw.headers["x-suanli-region"]

        assert [served() for _ in range(3)] == ["wuhan"] * 3
        _faults(proxy, "wuhan", stall_ms=900)  # its first token now comes after ~1 s
        during = [served() for _ in range(12)]
        assert during[-4:] == ["shanghai"] * 4  # it left the interactive set ...
        assert 1 <= during.count("wuhan") <= 4  # ... after a handful of slow answers
        # the status page and the monitor say why interactive work left it
        seen = httpx.get(f"{proxy.base_url.removesuffix('/v1')}/admin/status", timeout=10).json()
        by_id = {r["id"]: r for r in seen["regions"]}
        wuhan = by_id["wuhan"]["interactive"]
        assert wuhan["within_slo"] is False and wuhan["expected_ttft_ms"] > 400 >= wuhan["prior_ttft_ms"]
        assert by_id["shanghai"]["interactive"]["within_slo"] is True
        notes = routing_notes(seen)
        assert len(notes) == 1 and notes[0].startswith("no interactive at wuhan (east): first token expected")
        _faults(proxy, "wuhan")
        time.sleep(3.5)  # its slow samples age out (max_age_s) and its prior holds again
        after = [served() for _ in range(6)]
        assert after == ["wuhan"] * 6


def test_a_503_says_why_each_region_is_out_and_a_pin_outside_the_slo_is_not_retried(tmp_path: Path):
    regions = [
        _region("wuhan", 1.0, zone="east", ttft_ms=40, ms_per_token=0),
        _region("qingyang", 0.5, zone="west", ttft_ms=500, ms_per_token=0),
    ]
    config = small_config(tmp_path, regions=regions, vouchers=[], health=NO_PROBES)
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=2, timeout=30)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="qingyang/deepseek-flash", messages=QUESTION, max_tokens=5)
        error = caught.value
        assert error.status_code == 503
        assert error.response.headers["x-should-retry"] == "false"
        message = error.body["message"]
        assert "'deepseek-flash'" in message and "interactive" in message and "origin east" in message
        assert "qingyang: over the 400 ms latency SLO (expected first token 540 ms)" in message
        assert len(proxy.call(lambda router: router.ledger.usage())) == 0  # nothing was tried
        # the same pin for batch work is served, and an east pin too
        batch = client.chat.completions.with_raw_response.create(
            model="qingyang/deepseek-flash", messages=QUESTION, max_tokens=5,
            extra_headers={"X-Suanli-Class": "batch"},
        )
        assert batch.headers["x-suanli-region"] == "qingyang"
        east = client.chat.completions.with_raw_response.create(
            model="wuhan/deepseek-flash", messages=QUESTION, max_tokens=5
        )
        assert east.headers["x-suanli-region"] == "wuhan"
