"""Replicas: requests per second with one and with two `suanli serve` replicas on PostgreSQL.

    .venv/bin/python benchmarks/replicas.py [--seconds 5] [--concurrency 32] [--dsn postgresql://...]

Starts one `suanli sim` fleet (three regions, no artificial latency) and, for each setup,
`suanli serve` replicas in front of it, each in its own process, on one fresh PostgreSQL
schema (dropped afterwards), with a voucher in play so every request holds and settles on
the shared ledger. The load (non-streamed chat, ``--concurrency`` clients in all, split
evenly over the replicas) comes from this process over 127.0.0.1 for a bounded time. The
SQLite single-process figure is the reference. The DSN defaults to $SUANLI_TEST_PG_DSN,
else postgresql://postgres@127.0.0.1:5432/test. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import yaml
from _procs import free_port, spawn

ROOT = Path(__file__).resolve().parents[1]
BODY = {
    "model": "deepseek-flash",
    "messages": [{"role": "user", "content": "东数西算是什么？"}],
    "max_tokens": 16,
}
REGIONS = [
    {"id": rid, "zone": "east", "rtt_ms": {"east": 10 + i, "west": 30}, "ttft_ms": 0,
     "capabilities": ["chat", "completions", "embeddings"],
     "models": [{"name": "deepseek-flash", "price": {"input": 1.8 + i / 10, "output": 7.2}}]}
    for i, rid in enumerate(("wuhan", "shanghai", "wuhu"))
]


async def _load(urls: list[str], seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(url: str) -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return latencies


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await conn.close()


def _setup(work: Path, name: str, ledger_url: str, sim_port: int, replicas: int,
           args: argparse.Namespace) -> tuple[str, int, float, float, float]:
    config = {
        "ledger": {"url": ledger_url},
        "regions": [{**r, "provider": "openai", "base_url": f"http://127.0.0.1:{sim_port + i}/v1"}
                    for i, r in enumerate(REGIONS)],
        "vouchers": [{"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 10**12}],
    }
    path = work / f"{name.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = [free_port() for _ in range(replicas)]
    processes = [spawn(["serve", "--config", str(path), "--port", str(p)], f"http://127.0.0.1:{p}/health")
                 for p in ports]
    urls = [f"http://127.0.0.1:{p}/v1/chat/completions" for p in ports]
    try:
        asyncio.run(_load(urls, 1.0, args.concurrency))  # warm up
        latencies = sorted(asyncio.run(_load(urls, args.seconds, args.concurrency)))
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    rps = len(latencies) / args.seconds
    return name, len(latencies), rps, statistics.median(latencies) * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    default_dsn = os.environ.get("SUANLI_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    parser.add_argument("--dsn", default=default_dsn)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suanli-replicas-"))
    sim_port = free_port()
    (work / "sim.yaml").write_text(yaml.safe_dump(
        {"regions": [{**r, "provider": "sim", "sim": {"ms_per_token": 0}} for r in REGIONS]}))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sim = spawn(["sim", "--config", str(work / "sim.yaml"), "--port", str(sim_port)],
                 f"http://127.0.0.1:{sim_port}/v1/models")
    rows = []
    try:
        rows.append(_setup(work, "sqlite, 1 replica", f"sqlite:///{work / 'ledger.db'}", sim_port, 1, args))
        for replicas in (1, 2):
            schema = f"bench_{secrets.token_hex(4)}"
            sep = "&" if "?" in args.dsn else "?"
            try:
                rows.append(_setup(work, f"postgresql, {replicas} replica{'s' * (replicas > 1)}",
                                   f"{args.dsn}{sep}schema={schema}", sim_port, replicas, args))
            finally:
                asyncio.run(_drop(args.dsn, schema))
    finally:
        sim.terminate()
        sim.wait(10)
    print(f"non-streamed chat, {args.concurrency} concurrent clients in all, {args.seconds:g} s per setup, "
          f"{os.cpu_count()} cores shared by sim, replicas, PostgreSQL and the client")
    print(f"{'setup':<24} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, count, rps, p50, p99 in rows:
        print(f"{name:<24} {count:>9} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
