"""Quick load: what the proxy adds over calling one sim region directly.

    .venv/bin/python benchmarks/quick_load.py [--seconds 5] [--concurrency 16]

Starts `suanli sim` (one region, no artificial latency) and `suanli serve` in front of it (SQLite
ledger on, a voucher in play), each in its own process, then loads each target in turn from this
process with an aiohttp client, on 127.0.0.1 only, for a bounded time. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from _procs import free_port, spawn

ROOT = Path(__file__).resolve().parents[1]
BODY = {
    "model": "deepseek-flash",
    "messages": [{"role": "user", "content": "东数西算是什么？"}],
    "max_tokens": 16,
}
REGION = {
    "id": "wuhan",
    "zone": "east",
    "rtt_ms": {"east": 14, "west": 20},
    "ttft_ms": 0,
    "capabilities": ["chat", "completions", "embeddings"],
    "models": [{"name": "deepseek-flash", "price": {"input": 1.8, "output": 7.2}}],
}


async def _load(url: str, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _row(name: str, latencies: list[float], seconds: float) -> tuple[str, int, float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return name, len(ordered), len(ordered) / seconds, statistics.median(ordered) * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suanli-bench-"))
    sim_port, proxy_port = free_port(), free_port()
    (work / "sim.yaml").write_text(
        yaml.safe_dump({"regions": [{**REGION, "provider": "sim", "sim": {"ms_per_token": 0}}]})
    )
    (work / "proxy.yaml").write_text(
        yaml.safe_dump(
            {
                "ledger": {"url": f"sqlite:///{work / 'ledger.db'}"},
                "regions": [{**REGION, "provider": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1"}],
                "vouchers": [{"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 10**12}],
            }
        )
    )
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sim = spawn(
        ["sim", "--config", str(work / "sim.yaml"), "--port", str(sim_port)],
        f"http://127.0.0.1:{sim_port}/v1/models",
    )
    proxy = spawn(
        ["serve", "--config", str(work / "proxy.yaml"), "--port", str(proxy_port)],
        f"http://127.0.0.1:{proxy_port}/health",
    )
    try:
        rows = []
        for name, url in (
            ("direct to sim", f"http://127.0.0.1:{sim_port}/v1/chat/completions"),
            ("through suanli", f"http://127.0.0.1:{proxy_port}/v1/chat/completions"),
        ):
            asyncio.run(_load(url, 1.0, args.concurrency))  # warm up
            rows.append(_row(name, asyncio.run(_load(url, args.seconds, args.concurrency)), args.seconds))
    finally:
        for process in (proxy, sim):
            process.terminate()
            process.wait(10)
    direct = rows[0]
    print(f"non-streamed chat, {args.concurrency} concurrent clients, {args.seconds:g} s per target")
    print(
        f"{'target':<16} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8}"
    )
    for name, count, rps, p50, p99 in rows:
        print(
            f"{name:<16} {count:>9} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} "
            f"{p50 - direct[3]:>8.2f} {p99 - direct[4]:>8.2f}"
        )


if __name__ == "__main__":
    main()
