"""A fleet of simulated city platforms on loopback: one real HTTP server per sim region.

    async with SimFleet(config, latency_scale=0.0) as fleet:
        fleet.urls            # region id -> "http://127.0.0.1:PORT/v1"
        fleet.set_faults("qingyang", error_rate=1.0, error_status=503)

The servers themselves are ``create_sim_app`` (see ``providers/sim_app.py`` for the
endpoints, including the ``/sim/faults`` control endpoint).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiohttp import web

from suanli.config import Config, Region
from suanli.providers.sim_app import SIM_STATE, SimError, create_sim_app
from suanli.providers.sim_state import SimState
from suanli.providers.sim_text import warm_up

__all__ = ["SimError", "SimFleet", "SimState", "create_sim_app", "run_fleet_forever", "sim_regions"]


def sim_regions(config_or_regions: Config | Iterable[Region]) -> list[Region]:
    """The regions a fleet serves: ``provider: sim`` without a ``base_url``."""
    regions = config_or_regions.regions if isinstance(config_or_regions, Config) else config_or_regions
    return [r for r in regions if r.provider == "sim" and not r.base_url]


class SimFleet:
    """Starts one sim server per sim region on ``host``; an async context manager.

    Ports are ephemeral unless ``base_port`` is given (then ``base_port + i`` in region
    order). ``latency_scale`` multiplies every simulated wait (0.0: instant).
    """

    def __init__(
        self,
        config_or_regions: Config | Iterable[Region],
        *,
        host: str = "127.0.0.1",
        latency_scale: float = 1.0,
        base_port: int | None = None,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self.now_s = now_s  # the platforms' clock (prompt cache TTL, batch windows)
        self.regions = sim_regions(config_or_regions)
        config = config_or_regions if isinstance(config_or_regions, Config) else None
        self.timezone = config.timezone if config is not None else "Asia/Shanghai"
        self.vouchers = config.vouchers if config is not None else ()  # the sims' own packages
        self.host = host
        self.latency_scale = latency_scale
        self.base_port = base_port
        self._runners: dict[str, web.AppRunner] = {}  # region id -> running server
        self._urls: dict[str, str] = {}  # region id -> base URL ending in /v1

    @property
    def urls(self) -> dict[str, str]:
        """Region id -> base URL ending in ``/v1`` (empty until started)."""
        return dict(self._urls)

    async def start(self) -> None:
        """Start every server; on a failure the ones already started are stopped again."""
        # Load the tokenizer and the sentence vocabulary now, not on the first request.
        await asyncio.to_thread(warm_up)
        try:
            for i, region in enumerate(self.regions):
                port = 0 if self.base_port is None else self.base_port + i
                vouchers = [v for v in self.vouchers if v.region == region.id]
                app = create_sim_app(
                    region,
                    latency_scale=self.latency_scale,
                    timezone=self.timezone,
                    vouchers=vouchers,
                    now_s=self.now_s,
                )
                runner = web.AppRunner(app, access_log=None, handle_signals=False)
                await runner.setup()
                self._runners[region.id] = runner
                site = web.TCPSite(runner, self.host, port, reuse_address=True)
                await site.start()
                bound_port = runner.addresses[0][1]
                self._urls[region.id] = f"http://{_url_host(self.host)}:{bound_port}/v1"
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        runners = list(self._runners.values())
        self._runners.clear()
        self._urls.clear()
        await asyncio.gather(*(runner.cleanup() for runner in runners), return_exceptions=True)

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def state(self, region_id: str) -> SimState:
        """The live state of one sim (knobs, counters); KeyError for an unknown region."""
        return self._runners[region_id].app[SIM_STATE]

    def set_faults(self, region_id: str, **changes: object) -> dict[str, object]:
        """In-process twin of ``POST /sim/faults``; raises FaultUpdateError on a bad knob."""
        state = self.state(region_id)
        state.update(changes)
        return state.snapshot()

    def reset_faults(self, region_id: str | None = None) -> None:
        """Back to the configured behaviour, for one region or all."""
        for rid in [region_id] if region_id else list(self._runners):
            self.state(rid).reset()

    def stats(self, region_id: str) -> dict[str, int]:
        """Counters of one sim: requests, status_<code>, resets, disconnects."""
        return dict(self.state(region_id).stats)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _table(fleet: SimFleet) -> str:
    rows = [("region", "zone", "models", "url")]
    for region in fleet.regions:
        models = ",".join(offer.upstream_name for offer in region.models)
        rows.append((region.id, region.zone, models, fleet.urls[region.id]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    )


async def run_fleet_forever(config: Config, *, host: str = "127.0.0.1", base_port: int | None = None) -> None:
    """Run the fleet of ``config`` until cancelled (``suanli sim``), printing region -> URL."""
    fleet = SimFleet(config, host=host, base_port=base_port)
    if not fleet.regions:
        print("no sim regions without a base_url in this config")
        return
    async with fleet:
        print(_table(fleet), flush=True)
        print("control: POST <url minus /v1>/sim/faults with SimBehaviour fields; Ctrl-C stops", flush=True)
        await asyncio.Event().wait()
