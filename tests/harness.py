"""Test harness: small configs, and the real proxy served from a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from suanli.config import Config, load_config
from suanli.router.core.router import Router
from suanli.router.http.app import ROUTER, create_app

__all__ = ["ProxyThread", "running_proxy", "small_config"]


def small_config(tmp_path: Path, **overrides: Any) -> Config:
    """Three sim regions (two east, one west) and two vouchers; the ledger in ``tmp_path``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "origin": "east",
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "classes": {"interactive": {"latency_slo_ms": 400}, "batch": {"deadline_s": 86400}},
        "regions": [
            {"id": "shanghai", "zone": "east", "provider": "sim", "rtt_ms": {"east": 4, "west": 30},
             "ttft_ms": 40, "capabilities": ["chat", "completions", "embeddings"],
             "models": [{"name": "deepseek-flash", "price": {"input": 2.0, "output": 8.0}},
                        {"name": "text-embedding-v4", "price": {"input": 0.5, "output": 0}}]},
            {"id": "wuhan", "zone": "east", "provider": "sim", "rtt_ms": {"east": 14, "west": 20},
             "ttft_ms": 50, "capabilities": ["chat", "completions", "embeddings"],
             "models": [{"name": "deepseek-flash", "price": {"input": 1.8, "output": 7.2}}]},
            {"id": "qingyang", "zone": "west", "provider": "sim", "rtt_ms": {"east": 32, "west": 12},
             "ttft_ms": 380, "capabilities": ["chat", "completions", "embeddings", "batch"],
             "models": [{"name": "deepseek-flash", "price": {"input": 1.4, "output": 5.6}}]},
        ],
        "vouchers": [
            {"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 100000,
             "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"},
            {"id": "shanghai-credit", "region": "shanghai", "kind": "credit", "amount": 0.5,
             "models": ["text-embedding-v4"],
             "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"},
        ],
    }
    data.update(overrides)
    return load_config(data)


class ProxyThread:
    """The suanli app on 127.0.0.1, in its own thread and event loop."""

    def __init__(self, config: Config, *, master_key: str | None = None,
                 clock: Callable[[], datetime] | None = None, sim_latency_scale: float = 0.0,
                 config_source: Callable[[], Config] | None = None) -> None:
        self.config = config
        self._source = config_source
        self._master_key = master_key
        self._clock = clock
        self._scale = sim_latency_scale
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.router: Router | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = create_app(self.config, master_key=self._master_key, clock=self._clock,
                         sim_latency_scale=self._scale, config_source=self._source)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.router = app[ROUTER]

    def start(self) -> ProxyThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the proxy did not start within 30 s")
        return self

    def call(self, fn: Callable[[Router], Any]) -> Any:
        """Run ``fn(router)`` on the proxy's loop (ledger reads must happen there)."""
        async def run() -> Any:
            return fn(self.router)  # type: ignore[arg-type]

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def running_proxy(config: Config, **options: Any) -> Iterator[ProxyThread]:
    proxy = ProxyThread(config, **options).start()
    try:
        yield proxy
    finally:
        proxy.stop()
