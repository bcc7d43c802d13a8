"""Replicas: `suanli serve` on SQLite and on PostgreSQL with 1, 2 (and 4) replicas, in one run.

    .venv/bin/python benchmarks/replicas.py [--seconds 10] [--concurrency 32] [--replicas 1,2,4]
        [--stop-seconds 20] [--dsn postgresql://...]

Starts one `suanli sim` fleet (three regions, no artificial latency) and, for each setup,
`suanli serve` replicas in front of it, each in its own process, on one fresh PostgreSQL
schema (``r19bench_*``, dropped afterwards), with a voucher every request draws on and a
virtual key with a daily budget every request holds on. The load (non-streamed chat,
``--concurrency`` clients in all, split evenly over the replicas) comes from this process
over 127.0.0.1 for a bounded time. Per setup: req/s, p50/p99, PostgreSQL round trips per
request (every statement the replicas' pools sent, background work included, from the
``replica_stats`` each replica records) and sessions waiting on a lock (``pg_stat_activity``
sampled every 50 ms). Then, with 2 replicas: SIGSTOP one for ``--stop-seconds`` and report
the other's throughput during the stop against before it. The DSN defaults to
$SUANLI_TEST_PG_DSN, else postgresql://postgres@127.0.0.1:5432/test. Prints rich tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import yaml
from _escrow_costs import Costs, measure_costs
from _pg_cpu import backend_cpu, cpu_delta_ms
from _procs import free_port, spawn
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
MASTER = "sk-bench-replicas"
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


@dataclass
class Row:
    name: str
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    round_trips: float | None = None  # PostgreSQL statements per request, background included
    path_trips: float | None = None  # those the request path sent (flushes, leases)
    rows_per_flush: float | None = None
    pg_cpu_ms: float | None = None  # server CPU per request, all of suanli's sessions
    leases: float | None = None  # leases per 1,000 requests
    lock_mean: float | None = None  # sessions waiting on a lock, mean of the samples
    lock_max: int | None = None
    waiting: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


async def _load(urls: list[str], seconds: float, concurrency: int, key: str,
                done: list[tuple[int, float, float]] | None = None,
                failed: list[int] | None = None) -> list[float]:
    """``concurrency`` clients over ``urls`` for ``seconds``; latencies (s). ``done`` gets
    (url index, finish time, latency) per answer; ``failed`` the url index of each error
    answer (without it an error stops the run: a steady setup must answer every request)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=seconds + 60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=headers,
                                     timeout=timeout) as session:

        async def worker(i: int) -> None:
            url = urls[i % len(urls)]
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    if response.status != 200:
                        if failed is None:
                            text = (await response.text())[:200]
                            raise RuntimeError(f"{url} answered {response.status}: {text}")
                        failed.append(i % len(urls))
                        continue
                finished = time.perf_counter()
                latencies.append(finished - started)
                if done is not None:
                    done.append((i % len(urls), finished, finished - started))

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies


def _make_key(port: int) -> str:
    """A virtual key with a daily budget (large: every request holds on it, none is refused)."""
    body = json.dumps({"name": "bench", "budget_yuan_per_day": 10**6}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/admin/keys", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {MASTER}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["key"]


class LockSampler:
    """Sessions of this schema's replicas waiting on a lock, every 50 ms, while running (other
    runs on the same database name their sessions ``suanli ...`` too: only this schema's owners count)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.samples: list[int] = []
        self.waiting: Counter[str] = Counter()  # "wait_event: statement" of each waiter seen
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            names = await _names(conn, self.schema)
            while True:
                rows = await conn.fetch(
                    "SELECT wait_event, left(query, 70) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = ANY($1::text[]) AND datname = current_database()", names)
                self.samples.append(len(rows))
                self.waiting.update(f"{r[0]}: {r[1]}" for r in rows)
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _stats(dsn: str, schema: str) -> tuple[int, int, int, int, int]:
    """(round trips, leases, settles, flushes, request-path round trips) summed over the
    replicas, as they last recorded them."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT COALESCE(sum(round_trips), 0), COALESCE(sum(leases), 0), COALESCE(sum(settles), 0),"
            f" COALESCE(sum(flushes), 0), COALESCE(sum(path_trips), 0) FROM {schema}.replica_stats")
        return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])
    finally:
        await conn.close()


async def _names(conn: asyncpg.Connection, schema: str) -> list[str]:
    """The sessions of this setup's replicas: ``suanli OWNER`` for the owners of its schema."""
    return [f"suanli {r[0]}" for r in await conn.fetch(f"SELECT id FROM {schema}.owners")]


async def _server_cpu(dsn: str, schema: str) -> dict[int, float] | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await backend_cpu(conn, await _names(conn, schema))
    finally:
        await conn.close()


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await conn.close()


def _start(work: Path, name: str, ledger_url: str, sim_port: int, replicas: int) -> tuple[list, list[int]]:
    config = {
        "master_key": MASTER,
        "ledger": {"url": ledger_url},
        "regions": [{**r, "provider": "openai", "base_url": f"http://127.0.0.1:{sim_port + i}/v1"}
                    for i, r in enumerate(REGIONS)],
        "vouchers": [{"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 10**12}],
    }
    path = work / f"{name.replace(' ', '-').replace(',', '')}.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = [free_port() for _ in range(replicas)]
    processes = [spawn(["serve", "--config", str(path), "--port", str(p)], f"http://127.0.0.1:{p}/health")
                 for p in ports]
    return processes, ports


def _stop(processes: list) -> None:
    for process in processes:
        process.send_signal(signal.SIGCONT)  # a stopped one must run to end
        process.terminate()
    for process in processes:
        process.wait(30)


def _setup(work: Path, name: str, sim_port: int, replicas: int, args: argparse.Namespace,
           schema: str | None) -> Row:
    sep = "&" if "?" in args.dsn else "?"
    sqlite = f"sqlite:///{work / (name.replace(' ', '') + '.db')}"
    url = f"{args.dsn}{sep}schema={schema}" if schema else sqlite
    processes, ports = _start(work, name, url, sim_port, replicas)
    urls = [f"http://127.0.0.1:{p}/v1/chat/completions" for p in ports]
    row = Row(name)
    try:
        key = _make_key(ports[0])
        asyncio.run(_load(urls, 2.0, args.concurrency, key))  # warm up: caches, leases, pools
        if schema:
            time.sleep(1.2)  # every replica records its counters once more
            before = asyncio.run(_stats(args.dsn, schema))
            cpu_before = asyncio.run(_server_cpu(args.dsn, schema))

        async def measured() -> tuple[list[float], list[int]]:
            sampler = LockSampler(args.dsn, schema or "")
            if schema:
                sampler.start()
            try:
                return await _load(urls, args.seconds, args.concurrency, key), sampler.samples
            finally:
                await sampler.stop()
                row.waiting = sampler.waiting

        latencies, samples = asyncio.run(measured())
        if schema:
            row.pg_cpu_ms = cpu_delta_ms(cpu_before, asyncio.run(_server_cpu(args.dsn, schema)))
    finally:
        _stop(processes)  # each replica records its counters as it closes
    latencies.sort()
    row.requests = len(latencies)
    row.rps = len(latencies) / args.seconds
    row.p50_ms = statistics.median(latencies) * 1000
    row.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    if schema:
        after = asyncio.run(_stats(args.dsn, schema))
        row.round_trips = (after[0] - before[0]) / max(row.requests, 1)
        row.leases = (after[1] - before[1]) * 1000 / max(row.requests, 1)
        row.rows_per_flush = (after[2] - before[2]) / max(after[3] - before[3], 1)
        row.path_trips = (after[4] - before[4]) / max(row.requests, 1)
        if row.pg_cpu_ms is not None:
            row.pg_cpu_ms /= max(row.requests, 1)
        row.lock_mean = statistics.fmean(samples) if samples else 0.0
        row.lock_max = max(samples, default=0)
    return row


def _sigstop(work: Path, sim_port: int, args: argparse.Namespace,
             schema: str) -> tuple[float, float, int, int]:
    """Two replicas under load; one SIGSTOPped for ``--stop-seconds``: the other's req/s before and during."""
    sep = "&" if "?" in args.dsn else "?"
    processes, ports = _start(work, "sigstop", f"{args.dsn}{sep}schema={schema}", sim_port, 2)
    urls = [f"http://127.0.0.1:{p}/v1/chat/completions" for p in ports]
    before_s = 10.0
    done: list[tuple[int, float, float]] = []
    failed: list[int] = []
    try:
        key = _make_key(ports[0])
        asyncio.run(_load(urls, 2.0, args.concurrency, key))

        async def run() -> float:
            loop = asyncio.get_running_loop()
            load = loop.create_task(_load(urls, before_s + args.stop_seconds, args.concurrency, key, done,
                                          failed))
            await asyncio.sleep(before_s)
            stopped_at = time.perf_counter()
            processes[0].send_signal(signal.SIGSTOP)
            await asyncio.sleep(args.stop_seconds)
            processes[0].send_signal(signal.SIGCONT)
            await load
            return stopped_at

        stopped_at = asyncio.run(run())
    finally:
        _stop(processes)
    other = [t for i, t, _ in done if i == 1]
    start = min(t for _, t, _ in done)
    before = sum(1 for t in other if start + 1 <= t < stopped_at) / (stopped_at - start - 1)
    during = sum(1 for t in other if stopped_at <= t < stopped_at + args.stop_seconds) / args.stop_seconds
    # The stopped replica's requests in flight: answered late, or refused as in doubt (the
    # upstream answered while it was stopped, past the request's deadline).
    stranded = sum(1 for i, t, _ in done if i == 0 and t >= stopped_at)
    return before, during, stranded, len(failed)


def _table(rows: list[Row], args: argparse.Namespace) -> Table:
    table = Table(title=f"non-streamed chat, {args.concurrency} clients in all, {args.seconds:g} s per setup,"
                  f" {os.cpu_count()} cores shared by sim, replicas, PostgreSQL and the client")
    for column in ("setup", "requests", "req/s", "x sqlite", "p50 ms", "p99 ms", "PG trips/req",
                   "of them path", "rows/flush", "leases/1k req", "PG CPU ms/req", "lock waits mean",
                   "lock waits max"):
        table.add_column(column, justify="left" if column == "setup" else "right")
    base = rows[0].rps or 1.0
    for r in rows:
        table.add_row(r.name, str(r.requests), f"{r.rps:.0f}", f"{r.rps / base:.2f}", f"{r.p50_ms:.1f}",
                      f"{r.p99_ms:.1f}", "-" if r.round_trips is None else f"{r.round_trips:.3f}",
                      "-" if r.path_trips is None else f"{r.path_trips:.3f}",
                      "-" if r.rows_per_flush is None else f"{r.rows_per_flush:.1f}",
                      "-" if r.leases is None else f"{r.leases:.2f}",
                      "-" if r.pg_cpu_ms is None else f"{r.pg_cpu_ms:.3f}",
                      "-" if r.lock_mean is None else f"{r.lock_mean:.2f}",
                      "-" if r.lock_max is None else str(r.lock_max))
    return table


def _model(one: Row, costs: Costs) -> Table:
    """How many replicas (each as fast as the measured one) one PostgreSQL primary core carries.

    From the measured server CPU: a flush costs ``fixed + per_row * n`` (fitted on the
    in-process batches), a lease ``lease_cpu``; a request costs its share of a flush (at the
    rows per flush the run saw), of the leases it needed, and of the background statements
    (ticks, view refresh, planner): the rest of the PG CPU per request the run measured.
    """
    cpu = costs.flush_cpu_ms
    small, large = min(cpu), max(cpu)
    if one.pg_cpu_ms is None or cpu[small] is None or cpu[large] is None or costs.lease_cpu_ms is None:
        return Table(title="model: no server CPU figures (PostgreSQL is not local)")
    per_row = max((cpu[large] - cpu[small]) / (large - small), 0.0)
    fixed = max(cpu[small] - small * per_row, 0.0)
    rows = one.rows_per_flush or 1.0
    batch = per_row + fixed / rows
    leases = costs.lease_cpu_ms * (one.leases or 0.0) / 1000
    rest = max(one.pg_cpu_ms - batch - leases, 0.0)
    per_request = one.pg_cpu_ms
    table = Table(title=f"model: server CPU {costs.lease_cpu_ms:.2f} ms per lease, {fixed:.2f} ms +"
                  f" {per_row:.3f} ms per row per flush; at {rows:.1f} rows per flush a request costs the"
                  f" primary {batch:.3f} ms (rows) + {leases:.3f} (leases) + {rest:.3f} (background)"
                  f" = {per_request:.3f} ms")
    for column in ("replicas", "req/s (each as fast as the measured one, on cores of its own)", "x one",
                   "primary CPU (1 core)"):
        table.add_column(column, justify="right")
    for n in (1, 2, 4, 8, 16, 32, 64):
        busy = n * one.rps * per_request / 1000  # cores
        scale = min(1.0, 1 / busy) if busy else 1.0
        table.add_row(str(n), f"{n * one.rps * scale:.0f}", f"{n * scale:.2f}",
                      f"{min(busy, 1.0):.0%}" + (" (saturated)" if scale < 1 else ""))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--replicas", default="1,2,4", help="PostgreSQL setups to measure, comma-separated")
    parser.add_argument("--stop-seconds", type=float, default=20.0, help="0: skip the SIGSTOP run")
    default_dsn = os.environ.get("SUANLI_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    parser.add_argument("--dsn", default=default_dsn)
    args = parser.parse_args()
    console = Console(width=None if Console().is_terminal else 150)
    work = Path(tempfile.mkdtemp(prefix="suanli-replicas-"))
    sim_port = free_port()
    (work / "sim.yaml").write_text(yaml.safe_dump(
        {"regions": [{**r, "provider": "sim", "sim": {"ms_per_token": 0}} for r in REGIONS]}))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sim = spawn(["sim", "--config", str(work / "sim.yaml"), "--port", str(sim_port)],
                f"http://127.0.0.1:{sim_port}/v1/models")
    rows: list[Row] = []
    stop_figures = None
    try:
        with console.status("sqlite, 1 replica"):
            rows.append(_setup(work, "sqlite, 1 replica", sim_port, 1, args, None))
        for replicas in (int(n) for n in args.replicas.split(",") if n.strip()):
            schema = f"r19bench_{secrets.token_hex(4)}"
            name = f"postgresql, {replicas} replica{'s' * (replicas > 1)}"
            try:
                with console.status(name):
                    rows.append(_setup(work, name, sim_port, replicas, args, schema))
            finally:
                asyncio.run(_drop(args.dsn, schema))
        if args.stop_seconds > 0:
            schema = f"r19bench_{secrets.token_hex(4)}"
            try:
                with console.status(f"postgresql, 2 replicas, one SIGSTOPped for {args.stop_seconds:g} s"):
                    stop_figures = _sigstop(work, sim_port, args, schema)
            finally:
                asyncio.run(_drop(args.dsn, schema))
    finally:
        sim.terminate()
        sim.wait(10)
    console.print(_table(rows, args))
    for r in rows:
        for what, n in r.waiting.most_common(3):
            console.print(f"  {r.name}: {n} samples waiting on {what}")
    pg_one = next((r for r in rows if r.name == "postgresql, 1 replica"), None)
    if pg_one is not None:
        with console.status("the cost of a lease and of a flush"):
            costs = measure_costs(args.dsn)
        console.print(_model(pg_one, costs))
    if stop_figures is not None:
        before, during, stranded, errors = stop_figures
        table = Table(title=f"postgresql, 2 replicas: one SIGSTOPped for {args.stop_seconds:g} s")
        for column in ("the other's req/s before", "during the stop", "kept", "stopped one: answered late",
                       "refused"):
            table.add_column(column, justify="right")
        kept = f"{during / before:.0%}" if before else "-"
        table.add_row(f"{before:.0f}", f"{during:.0f}", kept, str(stranded), str(errors))
        console.print(table)


if __name__ == "__main__":
    main()
