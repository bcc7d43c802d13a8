"""Active probes against sim platforms over loopback: modes, failures, jitter."""

from __future__ import annotations

import asyncio
import random
import socket

import aiohttp

from suanli.config import Offer, Price, ProbeSettings, Region
from suanli.providers.probe import Prober, ProbeResult, probe_once
from suanli.providers.sim import SimFleet


def _region(region_id: str, probe: str = "models", **extra: object) -> Region:
    offer = Offer(name="chat-model", price=Price(input=1, output=2))
    return Region(id=region_id, zone="east", provider="sim", ttft_ms=0, models=(offer,), probe=probe, **extra)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_models_and_completion_probes_and_a_dead_port():
    regions = [_region("list"), _region("chat", probe="completion")]
    async with SimFleet(regions, latency_scale=0.0) as fleet, aiohttp.ClientSession() as session:
        listed = await probe_once(session, regions[0], fleet.urls["list"], timeout_s=5)
        chatted = await probe_once(session, regions[1], fleet.urls["chat"], timeout_s=5)
        dead = await probe_once(session, regions[0], f"http://127.0.0.1:{_closed_port()}/v1", timeout_s=5)
        assert (listed.ok, listed.status, listed.mode) == (True, 200, "models")
        assert (chatted.ok, chatted.status, chatted.mode) == (True, 200, "completion")
        assert (dead.ok, dead.status) == (False, 0)
        assert fleet.stats("chat")["status_200"] == 1  # the completion probe really asked for a token


async def test_a_failing_platform_is_reported_with_its_status():
    regions = [_region("bad")]
    async with SimFleet(regions, latency_scale=0.0) as fleet, aiohttp.ClientSession() as session:
        fleet.set_faults("bad", error_rate=1.0, error_status=503)
        result = await probe_once(session, regions[0].model_copy(update={"probe": "completion"}),
                                  fleet.urls["bad"], timeout_s=5)
        assert (result.ok, result.status) == (False, 503)


async def test_prober_probes_every_probed_region_on_a_jittered_schedule():
    regions = [_region("a"), _region("b"), _region("off", probe="off")]
    settings = ProbeSettings(interval_s=0.02, jitter=0.5)
    seen: list[ProbeResult] = []
    async with SimFleet(regions, latency_scale=0.0) as fleet, aiohttp.ClientSession() as session:
        prober = Prober(session, regions, fleet.urls, settings, seen.append, rng=random.Random(1))
        assert set(prober.targets) == {"a", "b"}
        waits = [prober.interval_s() for _ in range(200)]
        assert 0.01 <= min(waits) < 0.012 and 0.028 < max(waits) <= 0.03
        prober.start()
        for _ in range(200):
            if {r.region for r in seen} == {"a", "b"} and len(seen) >= 6:
                break
            await asyncio.sleep(0.01)
        await prober.stop()
        assert {r.region for r in seen} == {"a", "b"}
        assert all(r.ok for r in seen)
        assert "requests" not in fleet.stats("off")
