"""Active latency probes: a cheap call to every region at a jittered interval.

A region's ``probe`` says how: ``models`` (``GET /models``, free on every platform we know),
``completion`` (a 1-token chat completion: a real time to first token, but billed by the
platform and not recorded on the ledger) or ``off``. Only OpenAI-compatible regions
(``openai``, ``sim``) are probed. Each result goes to a callback; the router turns it into
a latency sample and a health signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import orjson

from suanli.config import ProbeSettings, Region

__all__ = ["ProbeResult", "Prober", "probe_once"]

_PROBED_PROVIDERS = ("openai", "sim")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: ``status`` 0 when no answer came (connect error, timeout)."""

    region: str
    ok: bool
    status: int
    round_trip_ms: float
    mode: str


async def probe_once(
    session: aiohttp.ClientSession, region: Region, base_url: str, *, timeout_s: float
) -> ProbeResult:
    """Probe ``region`` once at ``base_url`` (ending in ``/v1``) the way its ``probe`` says."""
    headers = {"Authorization": f"Bearer {region.api_key}"} if region.api_key else {}
    base = base_url.rstrip("/")
    started = time.perf_counter()
    status = 0
    try:
        async with asyncio.timeout(timeout_s):
            if region.probe == "completion":
                body = {
                    "model": region.models[0].upstream_name,
                    "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1,
                }
                headers = {**headers, "Content-Type": "application/json"}
                request = session.post(f"{base}/chat/completions", data=orjson.dumps(body), headers=headers)
            else:
                request = session.get(f"{base}/models", headers=headers)
            async with request as response:
                status = response.status
                await response.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        status = 0
    elapsed_ms = (time.perf_counter() - started) * 1000
    return ProbeResult(region.id, 200 <= status < 300, status, elapsed_ms, region.probe)


class Prober:
    """Probes every probed region forever, each on its own jittered schedule, until ``stop``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        regions: Iterable[Region],
        base_urls: dict[str, str],
        settings: ProbeSettings,
        on_result: Callable[[ProbeResult], Awaitable[None] | None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._on_result = on_result
        self._rng = rng or random.Random()
        # region -> base URL, for the regions that are probed at all
        self.targets: dict[str, tuple[Region, str]] = {}
        for region in regions:
            url = base_urls.get(region.id) or region.base_url
            if region.probe != "off" and region.provider in _PROBED_PROVIDERS and url:
                self.targets[region.id] = (region, url)
        self._tasks: list[asyncio.Task] = []

    def interval_s(self) -> float:
        """The next wait: the interval spread by +-jitter, so regions are not probed in step."""
        s = self._settings
        return s.interval_s * (1 + s.jitter * (2 * self._rng.random() - 1))

    def start(self) -> None:
        if not self._settings.enabled:
            return
        for region, url in self.targets.values():
            self._tasks.append(asyncio.create_task(self._loop(region, url), name=f"probe-{region.id}"))

    async def _loop(self, region: Region, url: str) -> None:
        # The first probe lands anywhere in the first interval: a fleet restart does not burst.
        await asyncio.sleep(self._rng.random() * self._settings.interval_s)
        while True:
            result = await probe_once(self._session, region, url, timeout_s=self._settings.timeout_s)
            outcome = self._on_result(result)
            if outcome is not None:
                await outcome
            await asyncio.sleep(self.interval_s())

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
