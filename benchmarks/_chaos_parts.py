"""The chaos harness's parts: server processes, the load that counts what clients received, and
the ledger invariants checked after each phase (see benchmarks/chaos.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

__all__ = [
    "STARTED",
    "Checked", "Server", "Tally", "check_ledger", "idle_in_transaction", "load", "pg_terminate", "run_cli",
]

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "东数西算是什么？"}]


STARTED: list[Server] = []  # every server started, so a phase that fails leaves none running


class Server:
    """One `suanli serve` process on a fixed port, restartable, killable, stoppable."""

    def __init__(self, config_path: Path, port: int, log: Path) -> None:
        self.config_path, self.port, self.log = config_path, port, log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suanli", "serve", "--config", str(self.config_path),
             "--port", str(self.port)],
            cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "SUANLI_LOG_LEVEL": "WARNING"},
        )
        STARTED.append(self)
        if wait:
            self.wait_up()
        return self

    def wait_up(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()[-1500:]}")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"serve did not come up: {self.log.read_text()[-1500:]}")

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Tally:
    """What the clients saw: answers received (whole), refusals, failures, per-second answers."""

    sent: int = 0
    statuses: Counter = field(default_factory=Counter)  # status (or "conn" / "cut") -> count
    no_retry_after: int = 0  # 429/503 refusals without Retry-After
    answered: set[str] = field(default_factory=set)  # request ids whose whole answer arrived
    answered_at: list[tuple[str, float]] = field(default_factory=list)  # (server url, monotonic time)


async def _one(session: aiohttp.ClientSession, url: str, rid: str, stream: bool, tally: Tally) -> None:
    body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 8, "stream": stream}
    tally.sent += 1
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body, headers={"X-Request-Id": rid}) as r:
            data = await r.read()
            if r.status == 200 and (not stream or b"data: [DONE]" in data):
                tally.statuses[200] += 1
                tally.answered.add(rid)
                tally.answered_at.append((url, time.monotonic()))
            elif r.status == 200:
                tally.statuses["cut"] += 1  # a stream that ended without [DONE]: not an answer
            else:
                tally.statuses[r.status] += 1
                if r.status in (429, 503) and "Retry-After" not in r.headers:
                    tally.no_retry_after += 1
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        tally.statuses["conn"] += 1  # refused, reset mid-answer (a kill), or timed out


async def load(urls: list[str], tally: Tally, stop: asyncio.Event, *, clients: int, stream: float,
               prefix: str) -> None:
    """``clients`` closed-loop clients spread over ``urls`` until ``stop``; ``stream``: share streamed."""
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client(c: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                streamed = (n * 7 + c) % 100 < stream * 100  # the share streamed, spread evenly
                before = tally.statuses["conn"]
                await _one(session, urls[c % len(urls)], f"{prefix}-{c}-{n}", streamed, tally)
                if tally.statuses["conn"] > before:
                    await asyncio.sleep(0.05)  # the server is restarting: do not spin

        await asyncio.gather(*(client(c) for c in range(clients)))


@dataclass
class Checked:
    """The invariants of one ledger after a phase (servers stopped, restarted once, stopped)."""

    vouchers_exact: bool
    negative: int
    pending: int
    rows: int
    unrecorded: list[str]  # answers a client received with no usage row
    not_received: list[tuple[str, int]]  # usage rows (request id, status) no client received whole
    audit_ok: bool


async def check_ledger(url: str, config_path: Path, answered: set[str]) -> Checked:
    """Read the ledger after the phase and check every invariant."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///").split("?")[0]
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            vouchers = conn.execute("SELECT id, amount_q, balance_q, held_q FROM vouchers").fetchall()
            spent = dict(conn.execute("SELECT voucher_id, SUM(voucher_q) FROM usage"
                                      " WHERE voucher_id IS NOT NULL GROUP BY voucher_id").fetchall())
            pending = conn.execute("SELECT COUNT(*) FROM holds WHERE state = 'pending'").fetchone()[0]
            rows = conn.execute("SELECT request_id, status FROM usage").fetchall()
        finally:
            conn.close()
    else:
        dsn, _, schema = url.partition("?schema=")
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            vouchers = await conn.fetch("SELECT id, amount_q, balance_q, held_q FROM vouchers")
            spent = dict(await conn.fetch("SELECT voucher_id, SUM(voucher_q) FROM usage"
                                          " WHERE voucher_id IS NOT NULL GROUP BY voucher_id"))
            pending = await conn.fetchval("SELECT COUNT(*) FROM holds WHERE state = 'pending'")
            rows = await conn.fetch("SELECT request_id, status FROM usage")
        finally:
            await conn.close()
    exact = all(balance == amount - int(spent.get(vid) or 0) for vid, amount, balance, _ in vouchers)
    negative = sum(1 for _, _, balance, held in vouchers if balance < 0 or balance - held < 0)
    recorded = {r[0] for r in rows}
    audit = await asyncio.to_thread(run_cli, "audit", "verify", "--config", str(config_path))
    return Checked(
        vouchers_exact=exact, negative=negative, pending=int(pending), rows=len(rows),
        unrecorded=sorted(answered - recorded),
        not_received=sorted((r[0], int(r[1])) for r in rows if r[0] not in answered),
        audit_ok=audit.returncode == 0,
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suanli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _client_ports(pid: int) -> list[int]:
    """Local TCP ports of ``pid``'s sockets (Linux /proc): its sessions' pg_stat_activity.client_port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def pg_terminate(dsn: str, schema: str, pid: int) -> int:
    """pg_terminate_backend on every session of the replica whose process is ``pid``; how many."""
    conn = await asyncpg.connect(dsn)
    try:
        return len(await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY($1::int[])"
            " AND application_name LIKE 'suanli%'", _client_ports(pid)))
    finally:
        await conn.close()


async def idle_in_transaction(dsn: str, schema: str, pid: int) -> int:
    """How many sessions of the replica whose process is ``pid`` sit idle inside a transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1::int[])"
            " AND state = 'idle in transaction'", _client_ports(pid)))
    finally:
        await conn.close()
