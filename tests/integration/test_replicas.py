"""Two `suanli serve` replicas on one PostgreSQL ledger, driven by the openai SDK.

1,000 simultaneous requests over both against a voucher that covers 300: at most 300 are
paid by it and the ledger sums are exact. kill -9 of the planner leader under load: the
other replica takes over the planning, resolves the dead one's holds, and nothing is
charged twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from suanli.providers.tokenizer import count_prompt_tokens
from suanli.router.ledger.postgres.ledger import PgLedger
from tests.harness import small_config
from tests.pg import drop_schema, fresh_pg_url, requires_pg

pytestmark = [requires_pg, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [{"role": "user", "content": "你好, 算力"}]
MAX_TOKENS = 8
# The sim answers exactly max_tokens tokens and counts the prompt as we do: a hold is the usage.
PER_REQUEST = count_prompt_tokens("chat/completions", {"messages": MESSAGES}) + MAX_TOKENS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    def __init__(self, config_path: Path, log: Path) -> None:
        self.log = log
        self.config_path = config_path
        self._start()

    def _start(self) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suanli", "serve", "--config", str(self.config_path),
             "--port", str(self.port)],
            cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "SUANLI_LOG_LEVEL": "INFO"},
        )

    def wait_up(self) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.process.poll() is not None and "already in use" in self.log.read_text()[-2000:]:
                self._start()  # the free port was taken meanwhile (a sim of another process): another one
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"a replica did not come up: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)


@pytest.fixture
async def cluster(tmp_path: Path):
    url = fresh_pg_url()
    config = small_config(
        tmp_path,
        ledger={"url": url},
        planner={"replan_s": 1},
        vouchers=[{"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 300 * PER_REQUEST,
                   "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}],
    )
    config_path = tmp_path / "config.yaml"
    dumped = config.model_dump(mode="json", exclude_none=True)
    config_path.write_text(yaml.safe_dump(dumped, allow_unicode=True))
    replicas = [Replica(config_path, tmp_path / f"replica{i}.log") for i in range(2)]
    for r in replicas:
        r.wait_up()
    yield config, replicas
    for r in replicas:
        r.stop()
    await drop_schema(url)


def _client(port: int) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100))
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60,
                              http_client=http)


async def _ask(client: openai.AsyncOpenAI, request_id: str) -> tuple[str, str]:
    raw = await client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=MAX_TOKENS,
        extra_headers={"X-Request-Id": request_id},
    )
    return raw.headers["x-request-id"], raw.headers["x-suanli-voucher"]


async def _open(config) -> PgLedger:
    return await PgLedger.open(config.ledger.url, [], clock=lambda: datetime.now(UTC), sweep_s=None)


async def test_1000_requests_over_two_replicas_never_overspend_a_voucher(cluster) -> None:
    config, replicas = cluster
    clients = [_client(r.port) for r in replicas]
    answers = await asyncio.gather(*(_ask(clients[i % 2], f"req-{i}") for i in range(1000)))
    paid = [rid for rid, voucher in answers if voucher == "wuhan-tokens"]
    # Holds equal the usage here, so the voucher pays whole requests, about 300 of them; the
    # last request a replica's escrow slice pays may take what is left of it and pay the rest in
    # cash (DESIGN: min(balance, tokens)), so one partly paid request per replica may join them.
    assert 250 <= len(paid) <= 300 + len(replicas)
    ledger = await _open(config)
    rows = await ledger.usage()
    assert len(rows) == 1000 and {r.request_id for r in rows} == {rid for rid, _ in answers}
    by_voucher = [r for r in rows if r.voucher_id == "wuhan-tokens"]
    assert sorted(r.request_id for r in by_voucher) == sorted(paid)
    spent = sum(r.voucher_units for r in by_voucher)
    assert spent <= 300 * PER_REQUEST
    partly = [r for r in by_voucher if r.voucher_units < PER_REQUEST]
    assert len(partly) <= len(replicas) and len(by_voucher) - len(partly) <= 300
    assert await ledger.balance("wuhan-tokens") == 300 * PER_REQUEST - spent
    assert await ledger.pending_holds() == 0
    assert await ledger.verify_chain() is None
    await ledger.close()
    for c in clients:
        await c.close()
    # the status API of a replica reads the shared ledger too
    with urllib.request.urlopen(f"http://127.0.0.1:{replicas[1].port}/admin/status", timeout=30) as response:
        status = json.loads(response.read())
    assert {v["id"] for v in status["vouchers"]} == {"wuhan-tokens"}
    # the CLI reads the same shared balance
    listed = subprocess.run(
        [sys.executable, "-m", "suanli", "vouchers", "--config", str(replicas[0].config_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    (row,) = json.loads(listed.stdout)
    assert row["id"] == "wuhan-tokens" and row["spent"] == spent and row["held"] == 0


async def test_kill_9_of_the_leader_under_load_fails_over_and_charges_nothing_twice(cluster) -> None:
    config, replicas = cluster
    ledger = await _open(config)
    leader = await _until(lambda: ledger.pool.fetchval("SELECT replica FROM leader"), lambda v: v is not None)
    first_plan = await _until(
        lambda: ledger.pool.fetchval("SELECT max(version) FROM plans"), lambda v: v is not None)
    owners = {r["pid"]: r["id"] for r in await ledger.pool.fetch("SELECT id, pid FROM owners")}
    victim = next(r for r in replicas if owners.get(r.process.pid) == leader)
    survivor = next(r for r in replicas if r is not victim)
    clients = {r.port: _client(r.port) for r in replicas}
    answered: list[str] = []
    cut: list[str] = []
    stop = asyncio.Event()

    async def load(replica: Replica, worker: int) -> None:
        for i in range(10**6):
            if stop.is_set():
                return
            try:
                answered.append((await _ask(clients[replica.port], f"w{replica.port}-{worker}-{i}"))[0])
            except openai.APIError:
                cut.append(f"w{replica.port}-{worker}-{i}")
                if replica is victim:
                    return

    workers = [asyncio.create_task(load(r, w)) for r in replicas for w in range(8)]
    await asyncio.sleep(1.5)
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    # The survivor leads and plans within a few seconds, while it keeps serving.
    new_leader = await _until(
        lambda: ledger.pool.fetchval("SELECT replica FROM leader"), lambda v: v != leader)
    await _until(lambda: ledger.pool.fetchval("SELECT leader FROM plans ORDER BY version DESC LIMIT 1"),
                 lambda v: v == new_leader)
    assert await ledger.pool.fetchval("SELECT max(version) FROM plans") > first_plan
    # ...and its sweep voids what the dead replica still held.
    dead_owner = next(owner for pid, owner in owners.items() if pid == victim.process.pid)
    await _until(lambda: ledger.pool.fetchval(
        "SELECT count(*) FROM holds WHERE owner = $1 AND state = 'pending'", dead_owner), lambda n: n == 0)
    # Its in-flight requests were held in its escrow slice: the slice comes back with its lease.
    await _until(lambda: ledger.pool.fetchval(
        "SELECT count(*) FROM leases WHERE owner = $1 AND state = 'live'", dead_owner), lambda n: n == 0)
    stop.set()
    await asyncio.gather(*workers)
    survivor.stop()

    assert cut and len(answered) > 50
    assert await ledger.pending_holds() == 0
    rows = await ledger.usage()
    charged = Counter(r.request_id for r in rows)
    assert max(charged.values()) == 1  # no request charged twice
    assert set(answered) <= set(charged)  # every answer a client got was settled
    spent = sum(r.voucher_units for r in rows if r.voucher_id == "wuhan-tokens")
    # A hold while the dead replica's slice was still out may be partial (fractional units):
    # the ledger's fixed-point sums are exact, this float sum of rows to a micro-token.
    assert await ledger.balance("wuhan-tokens") == pytest.approx(300 * PER_REQUEST - spent, abs=1e-6)
    assert (await ledger.balances())["wuhan-tokens"] == pytest.approx(300 * PER_REQUEST - spent, abs=1e-6)
    assert await ledger.verify_chain() is None
    await ledger.close()
    for c in clients.values():
        await c.close()


async def _until(read, ok, *, wait_s: float = 0.0, timeout_s: float = 15.0):  # noqa: ANN001, ANN202
    """Poll ``await read()`` until ``ok(value)``; the value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout_s} s")
        await asyncio.sleep(max(wait_s, 0.1))
