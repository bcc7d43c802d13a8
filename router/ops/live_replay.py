"""The live replay: a scenario day driven through the real stack, next to ``simulate``.

The paper (``suanli simulate --policy optimizer``) replays a trace through the chooser on a
virtual clock with latency priors. This replays the same trace through what people run:
the aiohttp proxy on loopback, the simulated city platforms at their real latencies, the
SQLite ledger, the live re-planner and the batch executor, on an accelerated clock
(``VirtualClock``: a day in a few minutes). Then it compares the two on the same requests:

- interactive requests are sent at their trace time, as chat completions with messages of
  their input size and ``max_tokens`` = their output (the sims answer exactly that long);
  one in ``stream_every`` is streamed, the rest are whole answers;
- batch requests are what a team sends as deferrable work: gathered for ``flush_s`` virtual
  seconds per origin into one ``/v1/batches`` job whose window ends within the request's own
  deadline, so the executor may move them to cheap hours as ``simulate`` may;
- training requests (fine-tuning jobs of millions of tokens) are left out of both sides.

Measured per side: cash (yuan, from the ledger's usage rows live; from the decisions in
simulate), interactive requests rejected, SLO misses (live: streamed answers whose first
token, measured by the client, plus the region's ``rtt_ms`` prior for the caller's origin,
exceeds the SLO; simulate counts none by construction), batch deadline misses, and where
each class went. Time is on the virtual clock except TTFT, which is real milliseconds.

Capacity: the per-region limiter counts on the router's clock, so ``limits.rpm``/``tpm`` are
per virtual minute as in ``simulate``: tpm per clock minute, the rule ``simulate`` keeps (a token
bucket had let a region start up to twice its tpm in a minute: live then rejected 1-5
requests a day to simulate's 14-37, and cityday's live cash was 0.969 of simulate's); rpm's
sliding log never admits more than a clock minute may. Latency windows age in virtual time
like everything else (the day is compressed whole: a region that turns slow is forgotten
after ``max_age_s`` of the day, as live). First
tokens keep their real latency; the sims pace the output after it ``pace`` times their usual
``ms_per_token`` (default a tenth), or a day's answers would need more cores than a laptop has.
``hours`` replays only the first hours of the trace (a quick look; both sides cut alike),
and ``replay_day.thin`` one request in N on a config scaled to match (both sides alike).

Both sides plan for the same day: ``simulate``'s forecast expects no arrival after the
trace's last hour, and the live re-planner is told the same
(``Replanner.expect_no_demand_after``). Without it the live planner, expecting tomorrow's
traffic as a running proxy should, keeps vouchers for a tomorrow the comparison never counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import aiohttp
import orjson
import yaml
from aiohttp import web

from suanli.config import Config
from suanli.providers.tokenizer import count_tokens
from suanli.router.core.clocks import VirtualClock
from suanli.router.http.app import ROUTER, create_app
from suanli.router.http.workloads import WORKLOADS
from suanli.router.ops.replay_day import Side, live_config
from suanli.router.simulate.trace import Trace, span_end

__all__ = ["LiveOutcome", "run_live"]

T = TypeVar("T")
_FILLER = "东数西算工程把东部的算力需求有序引导到西部，优化数据中心建设布局。"
_DONE_STATES = ("completed", "failed", "expired", "cancelled")


@dataclass(slots=True)
class LiveOutcome:
    side: Side
    wall_s: float
    speed: float
    skipped_training: int
    errors: Counter = field(default_factory=Counter)  # status -> count, interactive


def _prompt(tokens: int, cache: dict[int, str]) -> str:
    """Text of about ``tokens`` reference tokens (sized in steps of 10)."""
    step = max(10, int(round(tokens / 10.0)) * 10)
    text = cache.get(step)
    if text is None:
        text = _FILLER * max(1, step // max(count_tokens(_FILLER), 1) + 1)
        while count_tokens(text) > step and len(text) > 1:
            text = text[: max(1, int(len(text) * step / count_tokens(text)))]
        cache[step] = text
    return text


class _Driver:
    """Sends the trace to the proxy on the virtual clock and gathers what the client saw."""

    def __init__(self, config: Config, trace: Trace, clock: VirtualClock, base: str, proxy: _ProxyThread,
                 *, stream_every: int, flush_s: float) -> None:
        self.config = config
        self.trace = trace
        self.clock = clock
        self.base = base
        self.proxy = proxy
        self.stream_every = stream_every
        self.flush_s = flush_s
        self.prompts: dict[int, str] = {}
        self.ttft_ms: dict[int, float] = {}  # trace index -> client-side first-token ms (streams)
        self.status: dict[int, int] = {}
        self.region: dict[int, str] = {}
        self.batches: list[tuple[str, dict[str, int]]] = []  # (batch id, custom id -> trace index)
        self.tasks: list[asyncio.Task] = []
        self.skipped_training = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        pending: dict[str, list[int]] = defaultdict(list)  # origin -> batch trace indices
        next_flush = self.trace.start_s + self.flush_s
        for job in self.trace.jobs:
            await self._until(job.arrival_s)
            if job.arrival_s >= next_flush:
                await self._flush(session, pending)
                elapsed = job.arrival_s - self.trace.start_s
                next_flush = self.trace.start_s + (elapsed // self.flush_s + 1) * self.flush_s
            if job.work_class == "training":
                self.skipped_training += 1
            elif job.work_class == "batch":
                pending[job.origin].append(job.index)
            else:
                self.tasks.append(asyncio.create_task(self._interactive(session, job.index)))
        await self._flush(session, pending)
        await asyncio.gather(*self.tasks)

    async def _until(self, moment_s: float) -> None:
        while (ahead := moment_s - self.clock().timestamp()) > 0:
            await asyncio.sleep(min(ahead / self.clock.speed, 0.5))

    def _body(self, index: int, *, stream: bool) -> dict:
        job = self.trace.jobs[index]
        body: dict = {
            "model": job.model,
            "messages": [{"role": "user", "content": _prompt(int(job.input_tokens), self.prompts)}],
            "max_tokens": max(int(job.output_tokens), 1),
        }
        if stream:
            body["stream"] = True
        return body

    async def _interactive(self, session: aiohttp.ClientSession, index: int) -> None:
        job = self.trace.jobs[index]
        stream = index % self.stream_every == 0
        headers = {"X-Suanli-Class": "interactive", "X-Suanli-Origin": job.origin,
                   "X-Request-Id": f"trace-{index}"}
        started = time.perf_counter()
        try:
            async with session.post(f"{self.base}/chat/completions", json=self._body(index, stream=stream),
                                    headers=headers) as response:
                self.status[index] = response.status
                if response.status != 200:
                    await response.read()
                    return
                self.region[index] = response.headers.get("X-Suanli-Region", "")
                if stream:
                    async for _ in response.content.iter_any():
                        if index not in self.ttft_ms:
                            self.ttft_ms[index] = (time.perf_counter() - started) * 1000
                else:
                    await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self.status[index] = 0

    async def _flush(self, session: aiohttp.ClientSession, pending: dict[str, list[int]]) -> None:
        for origin, indices in list(pending.items()):
            if not indices:
                continue
            pending[origin] = []
            now_s = self.clock().timestamp()
            # the window must end within every line's own deadline (whole hours, at least one)
            left_s = min(self.trace.jobs[i].latest_s for i in indices) - now_s
            hours = max(1, min(168, math.floor(left_s / 3600.0)))
            lines = b"".join(
                orjson.dumps({"custom_id": f"t{i}", "method": "POST", "url": "/v1/chat/completions",
                              "body": self._body(i, stream=False)}) + b"\n"
                for i in indices
            )
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", lines, filename="lines.jsonl", content_type="application/jsonl")
            async with session.post(f"{self.base}/files", data=form) as response:
                uploaded = await response.json()
            async with session.post(
                f"{self.base}/batches",
                json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": f"{hours}h"},
                headers={"X-Suanli-Origin": origin},
            ) as response:
                batch = await response.json()
            self.batches.append((batch["id"], {f"t{i}": i for i in indices}))

    async def drain_batches(self, session: aiohttp.ClientSession) -> None:
        """Let every batch finish; when nothing runs, jump the clock to the next planned start."""
        db = self.proxy.app[WORKLOADS].parts()[0]
        while True:
            states = []
            for batch_id, _ in self.batches:
                async with session.get(f"{self.base}/batches/{batch_id}") as response:
                    states.append((await response.json())["status"])
            if all(state in _DONE_STATES for state in states):
                return
            row = await self.proxy.call(lambda: db.row(
                "SELECT SUM(state = 'running') AS running, MIN(CASE WHEN state = 'pending'"
                " THEN start_s END) AS next FROM wl_batch_lines"
            ))
            idle = row is not None and not row["running"] and row["next"] is not None
            if idle and row["next"] > self.clock().timestamp():
                self.clock.set(datetime.fromtimestamp(row["next"], UTC))
            await asyncio.sleep(0.2)


def _live_side(driver: _Driver, config: Config, trace: Trace, app: web.Application) -> tuple[Side, Counter]:
    side = Side()
    errors: Counter = Counter()
    usage = {row.request_id: row for row in app[ROUTER].ledger.usage()}
    slo = config.classes.interactive.latency_slo_ms
    for job in trace.jobs:
        if job.work_class != "interactive":
            continue
        side.requests += 1
        row = usage.get(f"trace-{job.index}")
        if driver.status.get(job.index) != 200 or row is None:
            side.rejected += 1
            errors[driver.status.get(job.index, -1)] += 1
            continue
        side.cash_yuan += row.cash_yuan
        side.cash_by_class["interactive"] += row.cash_yuan
        side.where["interactive"][row.region] += 1
        ttft = driver.ttft_ms.get(job.index)
        if ttft is not None:
            side.slo_measured += 1
            region = config.region(row.region)
            distance = region.rtt_ms.get(job.origin, 0.0) if region is not None else 0.0
            side.slo_misses += ttft + distance > slo
    db = app[WORKLOADS].parts()[0]
    for batch_id, lines in driver.batches:
        for line in db.rows("SELECT line_no, custom_id, ok, ran_at FROM wl_batch_lines WHERE batch_id = ?",
                            (batch_id,)):
            job = trace.jobs[lines[line["custom_id"]]]
            side.requests += 1
            row = usage.get(f"{batch_id}-{line['line_no']}")
            late = line["ran_at"] is None or line["ran_at"] > job.latest_s + 1e-6
            if not line["ok"] or row is None or late:
                side.deadline_misses += 1
            if row is not None:
                side.cash_yuan += row.cash_yuan
                side.cash_by_class["batch"] += row.cash_yuan
                side.where["batch"][row.region] += 1
    return side, errors


@contextlib.asynccontextmanager
async def sims_apart(config: Config, folder: Path) -> AsyncIterator[Config]:
    """The config's sim regions served by ``suanli sim`` in a process of its own, as remote
    platforms are: their streams and timers do not share the proxy's event loop, so a first
    token's time is the platform's plus what the proxy adds. Yields the config pointing at them."""
    path = folder / "sims.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True, exclude_none=True)))
    base_port = _free_ports(len(config.regions))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "suanli", "sim", "--config", str(path), "--port", str(base_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        urls: dict[str, str] = {}
        async with asyncio.timeout(60):
            while len(urls) < len(config.regions):
                line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
                if not line:
                    raise RuntimeError("suanli sim ended before it served every region")
                parts = line.split()
                if len(parts) >= 2 and parts[-1].startswith("http://") and config.region(parts[0]):
                    urls[parts[0]] = parts[-1]
        regions = tuple(r.model_copy(update={"base_url": urls[r.id]}) for r in config.regions)
        yield config.model_copy(update={"regions": regions})
    finally:
        process.terminate()
        await process.wait()


def _free_ports(count: int) -> int:
    """A base port with ``count`` free ports after it."""
    for base in range(random.randrange(20000, 50000, 100), 60000, 100):
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError("no free ports")


async def run_live(config: Config, trace: Trace, *, minutes: float = 4.0, stream_every: int = 4,
                   flush_s: float = 600.0, pace: float = 0.1) -> LiveOutcome:
    """Drive ``trace`` through the real stack in about ``minutes`` of wall time."""
    span_s = max((trace.offsets_s[-1] if trace.offsets_s else 0.0), 60.0)
    speed = span_s / (minutes * 60.0)
    folder = Path(urlparse(config.ledger.url).path).parent
    async with sims_apart(live_config(config, pace), folder) as apart:
        return await _drive(apart, trace, speed, stream_every=stream_every, flush_s=flush_s)


class _ProxyThread:
    """The app on loopback in a thread and event loop of its own, so the driver's client work
    does not queue ahead of the proxy's on one loop (a real proxy does not share its loop with
    its clients). ``call`` runs a function on the proxy's loop (SQLite handles live there)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="suanli-proxy")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))  # our own socket: its port is ours to read
        self.port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener).start()

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the proxy did not start within 60 s")
        return f"http://127.0.0.1:{self.port}/v1"

    async def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


async def _drive(
    config: Config, trace: Trace, speed: float, *, stream_every: int, flush_s: float
) -> LiveOutcome:
    clock = VirtualClock(trace.start, speed=speed)
    app = create_app(config, clock=clock, sim_latency_scale=1.0)
    # simulate's forecast expects nothing after the trace's last hour; the live planner is told the same
    app[ROUTER].planning.expect_no_demand_after(span_end(trace))
    proxy = _ProxyThread(app)
    base = proxy.start()
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=0)
    try:
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            driver = _Driver(config, trace, clock, base, proxy, stream_every=stream_every, flush_s=flush_s)
            await driver.run(session)
            await driver.drain_batches(session)
            side, errors = await proxy.call(lambda: _live_side(driver, config, trace, proxy.app))
    finally:
        await asyncio.to_thread(proxy.stop)
    return LiveOutcome(side, time.perf_counter() - started, speed, driver.skipped_training, errors)


