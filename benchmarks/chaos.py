"""Chaos: money invariants of the proxy and its ledger under kill -9, lost and stopped replicas,
a full disk and upstream faults.

    .venv/bin/python benchmarks/chaos.py [--only PHASE ...] [--seconds 8] [--clients 16] [--dsn DSN] [--no-pg]

Each phase runs real `suanli serve` processes on 127.0.0.1 in front of a `suanli sim` fleet
(two east regions, a token voucher and a credit voucher in play), under closed-loop client
load from this process, for a bounded few seconds:

- ``kill9-{sqlite,pg}-{json,stream}``: kill -9 the server three times under load, restart it;
- ``pg-terminate``: two replicas on PostgreSQL; ``pg_terminate_backend`` on every session of one
  of them, three times, under load;
- ``pg-sigstop``: two replicas; SIGSTOP one for ``--stop-s`` seconds; the other's answers per
  second during the stop against before it (``kept``);
- ``full-disk``: the SQLite ledger capped by ``max_page_count``; then ``suanli serve`` restarted
  on the full ledger (it must start and refuse with 503), then with room again (it must serve);
- ``upstream-faults``: one region answers 503 to 30% of calls, the other cuts streams mid-way.

After each phase the servers are restarted once and stopped (resolving what was left), and
the ledger is checked: every voucher equals its amount minus its settled usage; no voucher
negative; no pending hold; ``suanli audit verify`` passes; every answer a client received
whole has its usage row (``unrecorded``, must be 0); usage rows no client received whole
(cut off by a kill, a broken stream) are counted and listed. Answers with status 500 and
refusals without Retry-After are counted (both must be 0). Prints one table.
The PostgreSQL DSN defaults to $SUANLI_TEST_PG_DSN, else postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import yaml
from _chaos_parts import (
    STARTED,
    Checked,
    Server,
    Tally,
    check_ledger,
    idle_in_transaction,
    load,
    pg_terminate,
)
from _procs import free_port, spawn
from rich.console import Console
from rich.table import Table

REGIONS = [
    {"id": "wuhan", "price": 2.0, "voucher": {"id": "wuhan-tokens", "kind": "tokens", "amount": 50_000_000}},
    {"id": "shanghai", "price": 2.2, "voucher": {"id": "shanghai-credit", "kind": "credit", "amount": 1000}},
]
FAR = {"valid_from": "2026-01-01T00:00:00+08:00", "expires": "2030-01-01T00:00:00+08:00"}


class Lab:
    """A temporary folder, one sim fleet, and the configs the phases serve."""

    def __init__(self, root: Path, dsn: str | None, args: argparse.Namespace) -> None:
        self.root, self.dsn, self.args = root, dsn, args
        self.sim_port = _free_ports(len(REGIONS))  # one port per region, in a row
        sims = {"regions": [_region(r, None) for r in REGIONS]}
        (root / "sims.yaml").write_text(yaml.safe_dump(sims))
        self.sims = spawn(["sim", "--config", str(root / "sims.yaml"), "--port", str(self.sim_port)],
                          f"http://127.0.0.1:{self.sim_port}/v1/models")
        self.schemas: list[str] = []
        self.mounts: list[Path] = []  # tmpfs mounted for the full-disk phase

    def sim_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.sim_port + index}"

    def config(self, name: str, ledger_url: str) -> Path:
        data = {
            "timezone": "Asia/Shanghai", "origin": "east",
            "ledger": {"url": ledger_url, "hold_timeout_s": 60,
                       # a suanli from before liveness_grace_s (--baseline) refuses the key
                       **({} if self.args.baseline else {"liveness_grace_s": 2.0})},
            "classes": {"interactive": {"latency_slo_ms": 400}},
            "health": {"probes": {"enabled": False}},
            "regions": [_region(r, f"{self.sim_url(i)}/v1") for i, r in enumerate(REGIONS)],
            "vouchers": [{**r["voucher"], "region": r["id"], **FAR} for r in REGIONS],
        }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def sqlite_url(self, name: str, options: str = "") -> str:
        return f"sqlite:///{self.root / name}.db{options}"

    def pg_url(self) -> str:
        schema = f"chaos_{secrets.token_hex(4)}"
        self.schemas.append(schema)
        return f"{self.dsn}?schema={schema}"

    def servers(self, config: Path, count: int, name: str) -> list[Server]:
        return [Server(config, free_port(), self.root / f"{name}-{i}.log").start() for i in range(count)]

    async def close(self) -> None:
        for server in STARTED:
            server.stop()
        self.sims.terminate()
        self.sims.wait(10)
        for folder in self.mounts:
            subprocess.run(["umount", str(folder)], check=False)
        if self.dsn and self.schemas:
            conn = await asyncpg.connect(self.dsn)
            for schema in self.schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1."""
    import socket

    while True:
        first = free_port()
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


def _region(r: dict, base_url: str | None) -> dict:
    region = {"id": r["id"], "zone": "east", "provider": "sim", "rtt_ms": {"east": 10, "west": 30},
              "ttft_ms": 20, "capabilities": ["chat"], "sim": {"ms_per_token": 0},
              "models": [{"name": "deepseek-flash",
                          "price": {"input": r["price"], "output": 4 * r["price"]}}]}
    if base_url:
        region["base_url"] = base_url
    return region


async def _under_load(lab: Lab, urls: list[str], tally: Tally, chaos: Callable[[], Awaitable[str]], *,
                      stream: float, prefix: str, clients: int | None = None) -> str:
    """Run the load while ``chaos`` does its worst; the note ``chaos`` returns."""
    stop = asyncio.Event()
    task = asyncio.create_task(load(urls, tally, stop, clients=clients or lab.args.clients, stream=stream,
                                    prefix=prefix))
    try:
        note = await chaos()
    finally:
        stop.set()
        await task
    return note


async def _settle_and_check(
    servers: list[Server], url: str, config: Path, tally: Tally, *, pg: bool
) -> Checked:
    """Restart what was there once (a restart resolves what the dead left), stop it, check the ledger."""
    for s in servers:
        s.stop()
    for s in servers:
        s.start()
    if pg:
        await asyncio.sleep(3.5)  # liveness_grace_s (2 s) and a sweep: the dead owners' holds go
    for s in servers:
        s.stop()
    return await check_ledger(url, config, tally.answered)


async def kill9(lab: Lab, backend: str, stream: float) -> tuple[Tally, Checked, str]:
    name = f"kill9-{backend}-{'stream' if stream else 'json'}"
    url = lab.pg_url() if backend == "pg" else lab.sqlite_url(name)
    config = lab.config(name, url)
    (server,) = lab.servers(config, 1, name)
    tally = Tally()

    async def chaos() -> str:
        for _ in range(3):
            await asyncio.sleep(lab.args.seconds / 3)
            server.kill9()
            await asyncio.to_thread(server.start)
        await asyncio.sleep(1.0)
        return "3 kills"

    note = await _under_load(lab, [server.url], tally, chaos, stream=stream, prefix=name)
    return tally, await _settle_and_check([server], url, config, tally, pg=backend == "pg"), note


async def pg_terminate_phase(lab: Lab) -> tuple[Tally, Checked, str]:
    url = lab.pg_url()
    config = lab.config("pg-terminate", url)
    servers = lab.servers(config, 2, "pg-terminate")
    schema = url.partition("?schema=")[2]
    tally = Tally()

    async def chaos() -> str:
        ended = 0
        for _ in range(3):
            await asyncio.sleep(lab.args.seconds / 3)
            ended += await pg_terminate(lab.dsn or "", schema, servers[0].process.pid)  # type: ignore[union-attr]
        await asyncio.sleep(2.0)
        voided = sum(s.log.read_text().count("pending holds of") for s in servers)
        return f"{ended} sessions ended; live holds voided by a peer: {voided}"

    note = await _under_load(lab, [s.url for s in servers], tally, chaos, stream=0.2, prefix="term")
    return tally, await _settle_and_check(servers, url, config, tally, pg=True), note


async def pg_sigstop_phase(lab: Lab) -> tuple[Tally, Checked, str]:
    url = lab.pg_url()
    config = lab.config("pg-sigstop", url)
    servers = lab.servers(config, 2, "pg-sigstop")
    tally = Tally()
    marks: dict[str, float] = {}

    schema = url.partition("?schema=")[2]
    pid = servers[0].process.pid  # type: ignore[union-attr]

    async def chaos() -> str:
        await asyncio.sleep(3.0)
        # The worst case: stopped while inside a transaction, holding the voucher and chain rows.
        # Stop it, look; if it holds none, let it go on and try again (up to 30 times).
        for tries in range(1, 31):  # noqa: B007 - reported below
            marks["stop"] = time.monotonic()
            servers[0].signal(signal.SIGSTOP)
            await asyncio.sleep(0.2)
            held = await idle_in_transaction(lab.dsn or "", schema, pid)
            if held:
                break
            servers[0].signal(signal.SIGCONT)
            await asyncio.sleep(0.1)
        await asyncio.sleep(max(0.0, lab.args.stop_s - (time.monotonic() - marks["stop"])))
        servers[0].signal(signal.SIGCONT)
        marks["cont"] = time.monotonic()
        await asyncio.sleep(2.0)
        return f"stopped inside a transaction: {'yes' if held else 'no'} (try {tries})"

    where = await _under_load(lab, [s.url for s in servers], tally, chaos, stream=0.2, prefix="stop")
    other = [t for u, t in tally.answered_at if u == servers[1].url]
    before = sum(1 for t in other if marks["stop"] - 2.5 <= t < marks["stop"] - 0.5) / 2.0
    during = sum(1 for t in other if marks["stop"] <= t < marks["cont"]) / (marks["cont"] - marks["stop"])
    kept = during / before if before else 0.0
    note = (f"other replica {before:.0f} -> {during:.0f} answers/s while one is stopped"
            f" {lab.args.stop_s:g} s: kept {kept:.0%}; {where}")
    return tally, await _settle_and_check(servers, url, config, tally, pg=True), note


async def full_disk_phase(lab: Lab) -> tuple[Tally, Checked, str]:
    """A 2 MiB tmpfs under the ledger when root may mount one, else a ``max_page_count`` cap."""
    disk = lab.root / "disk"
    tmpfs = _mount(disk, "2m")
    if tmpfs:
        lab.mounts.append(disk)
        base = full = f"sqlite:///{disk / 'full-disk.db'}"
    else:
        base = lab.sqlite_url("full-disk", "?spare_pages=16")
        # The ledger as a first start leaves it, then a cap a few hundred requests above that.
        Server(lab.config("full-disk", base), free_port(), lab.root / "full-disk.log").start().stop()
        pages = sqlite3.connect(str(lab.root / "full-disk.db")).execute("PRAGMA page_count").fetchone()[0]
        full = f"{base}&max_page_count={pages + 40}"
    server = Server(lab.config("full-disk", full), free_port(), lab.root / "full-disk.log").start()
    tally = Tally()

    async def chaos() -> str:
        await asyncio.sleep(lab.args.seconds * (2 if tmpfs else 1))
        return ""

    await _under_load(lab, [server.url], tally, chaos, stream=0.2, prefix="full")
    server.stop()
    if tmpfs:  # closing truncated the WAL: fill what that freed, as another program would
        _fill(disk / "filler")
    # Still full: serve must start and refuse cleanly (or exit saying why); then space returns.
    status_full: int | str = "exit"
    try:
        server.start()
        started = True
    except RuntimeError:
        status_full = f"exit: {_last_error(server.log)}"
        (disk / "filler").unlink(missing_ok=True)
        started = False
        try:
            server.start()
        except RuntimeError:  # it cannot start even with that space back
            checked = await check_ledger(base, server.config_path, tally.answered)
            note = f"restart on the full disk: {status_full}; with space freed: still cannot start"
            return tally, checked, note
    async with aiohttp.ClientSession() as session:
        if started:
            status_full = await _status(session, server.url, "full-disk-while-full")
        if tmpfs:  # the filler goes: served again, no restart
            (disk / "filler").unlink(missing_ok=True)
            waited = time.monotonic()
            while (status_room := await _status(session, server.url, "full-disk-room-again")) != 200:
                if time.monotonic() - waited > 15:
                    break
                await asyncio.sleep(0.5)
            took = time.monotonic() - waited
            how = f"space freed under the running server: {status_room} after {took:.1f} s"
    if not tmpfs:
        server.stop()
        server.config_path = lab.config("full-disk", base)  # the same file, the cap lifted
        server.start()
        async with aiohttp.ClientSession() as session:
            status_room = await _status(session, server.url, "full-disk-room-again")
        how = f"restarted without the cap: {status_room}"
    for rid, status in (("full-disk-while-full", status_full), ("full-disk-room-again", status_room)):
        if status == 200:
            tally.answered.add(rid)
    server.stop()
    checked = await check_ledger(base, server.config_path, tally.answered)
    kind = "2 MiB tmpfs" if tmpfs else f"max_page_count {full.rpartition('=')[2]}"
    note = f"{kind}; restart on the full ledger: up, answers {status_full}; {how}"
    return tally, checked, note


def _last_error(log: Path) -> str:
    """The last line of a server log that names an error (its exit message)."""
    lines = [line for line in log.read_text().splitlines() if "rror" in line and "Unclosed" not in line]
    return lines[-1][:90] if lines else "?"


def _fill(path: Path) -> None:
    """Write ``path`` until the disk has no room left."""
    try:
        with path.open("wb") as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    except OSError:
        pass  # full (a file of 0 bytes if it was already)


def _mount(folder: Path, size: str) -> bool:
    """Mount a small tmpfs at ``folder`` (root only, where allowed); False when it cannot."""
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


async def _status(session: aiohttp.ClientSession, url: str, request_id: str) -> int:
    body = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"X-Request-Id": request_id}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status


async def upstream_faults_phase(lab: Lab) -> tuple[Tally, Checked, str]:
    url = lab.sqlite_url("upstream-faults")
    config = lab.config("upstream-faults", url)
    (server,) = lab.servers(config, 1, "upstream-faults")
    tally = Tally()
    async with aiohttp.ClientSession() as session:
        for i, knobs in enumerate(({"error_rate": 0.3, "error_status": 503}, {"reset_after_chunks": 2})):
            (await session.post(f"{lab.sim_url(i)}/sim/faults", json=knobs)).close()

    async def chaos() -> str:
        await asyncio.sleep(lab.args.seconds)
        return "wuhan 30% 503, shanghai cuts streams after 2 chunks"

    try:
        note = await _under_load(lab, [server.url], tally, chaos, stream=0.5, prefix="faults")
    finally:
        async with aiohttp.ClientSession() as session:
            for i in range(len(REGIONS)):
                (await session.delete(f"{lab.sim_url(i)}/sim/faults")).close()
    return tally, await _settle_and_check([server], url, config, tally, pg=False), note


PHASES: dict[str, tuple[bool, Callable[[Lab], Awaitable[tuple[Tally, Checked, str]]]]] = {
    "kill9-sqlite-json": (False, lambda lab: kill9(lab, "sqlite", 0.0)),
    "kill9-sqlite-stream": (False, lambda lab: kill9(lab, "sqlite", 1.0)),
    "kill9-pg-json": (True, lambda lab: kill9(lab, "pg", 0.0)),
    "kill9-pg-stream": (True, lambda lab: kill9(lab, "pg", 1.0)),
    "pg-terminate": (True, pg_terminate_phase),
    "pg-sigstop": (True, pg_sigstop_phase),
    "full-disk": (False, full_disk_phase),
    "upstream-faults": (False, upstream_faults_phase),
}


def _row(name: str, tally: Tally, c: Checked, note: str) -> list[str]:
    s = tally.statuses
    refused = s[503] + s[429]
    other_5xx = sum(n for k, n in s.items() if isinstance(k, int) and k >= 500 and k not in (500, 503))
    violations = (len(c.unrecorded) + c.pending + c.negative + (not c.vouchers_exact) + (not c.audit_ok)
                  + s[500] + tally.no_retry_after)
    return [name, str(tally.sent), str(len(tally.answered)), str(refused), str(other_5xx), str(s[500]),
            str(tally.no_retry_after), str(s["conn"] + s["cut"]), str(c.rows), str(len(c.unrecorded)),
            str(len(c.not_received)), str(c.pending), "yes" if c.vouchers_exact else "NO", str(c.negative),
            "OK" if c.audit_ok else "FAILED", str(violations), note]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(PHASES), help="run only these phases")
    parser.add_argument("--seconds", type=float, default=8.0, help="load per phase (default 8)")
    parser.add_argument("--stop-s", type=float, default=8.0, help="how long pg-sigstop stops a replica")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--dsn", default=os.environ.get("SUANLI_TEST_PG_DSN")
                        or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL phases")
    parser.add_argument("--baseline", action="store_true",
                        help="configs an older suanli accepts (run with that suanli's python to compare)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (configs, ledgers, server logs), kept")
    args = parser.parse_args()
    dsn = None if args.no_pg else args.dsn
    if dsn:
        try:
            (await asyncpg.connect(dsn, timeout=5)).terminate()
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"PostgreSQL at {dsn} unreachable ({exc}): skipping its phases", file=sys.stderr)
            dsn = None
    table = Table(title="chaos: money invariants after each phase")
    for column in ("phase", "requests", "answered", "503/429", "other 5xx", "500", "no Retry-After",
                   "cut/conn", "usage rows", "unrecorded", "not received", "pending", "vouchers exact",
                   "negative", "audit", "violations", "note"):
        table.add_column(column, justify="left" if column in ("phase", "note") else "right")
    listed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="suanli-chaos-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        lab = Lab(folder, dsn, args)
        try:
            for name, (needs_pg, phase) in PHASES.items():
                if (args.only and name not in args.only) or (needs_pg and not dsn):
                    continue
                started = time.monotonic()
                tally, checked, note = await phase(lab)
                took = f"({time.monotonic() - started:.0f} s)"
                table.add_row(*_row(name, tally, checked, f"{note} {took}".strip()))
                shown = ", ".join(f"{rid} ({status})" for rid, status in checked.not_received[:4])
                if checked.not_received:
                    listed.append(f"{name}: {len(checked.not_received)} settled, not received whole: {shown}"
                                  f"{' ...' if len(checked.not_received) > 4 else ''}")
                if checked.unrecorded:
                    listed.append(f"{name}: UNRECORDED answers: {', '.join(checked.unrecorded[:10])}")
        finally:
            await lab.close()
    console = Console(width=250)
    console.print(table)
    for line in listed:
        console.print(line)
    return 0


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main()))
