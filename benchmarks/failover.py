"""Failover under faults: success rate, latency and attempts with and without broken regions.

    .venv/bin/python benchmarks/failover.py [--requests 10000] [--concurrency 32]

Starts the bundled catalog's eight sim platforms (`suanli sim`, latencies cut to a twentieth
so a run takes seconds) and, for each run, a fresh `suanli serve` in front of them (each
region an OpenAI-compatible upstream, SQLite ledger and the catalog's vouchers on, rate
limits off so that only the faults decide). The first run has no faults; it also shows which
regions carry the traffic. The second run makes the busiest region fail 30% of its calls
(503) and the second busiest stall past its first-byte timeout. A mix of interactive and
batch, streamed and not, is sent by 32 aiohttp clients. Each answer must be a 200 or a clean
OpenAI error (JSON ``{"error": ...}``, not a 500, not a hang); afterwards the ledger is read
back and must balance to the unit with no hold pending. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import yaml
from _procs import spawn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from suanli.config import catalog_text, load_config  # noqa: E402
from suanli.optimizer import Ask, State, rank  # noqa: E402

MESSAGES = [{"role": "user", "content": "东数西算是什么？"}]
SPEED_UP = 20  # sim latencies are the catalog's divided by this
TIMEOUTS = {"connect_s": 0.5, "first_byte_s": 0.5, "idle_s": 2.0}
CLIENT_TIMEOUT_S = 30.0  # an answer slower than this counts as a hang
ERRORS: collections.Counter[str] = collections.Counter()  # status and start of body -> count


def _port_block(n: int) -> int:
    """A first port with the next ``n`` free (best effort)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + n < 65000 and all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _configs(work: Path, sim_port: int) -> tuple[Path, dict[str, str]]:
    catalog = yaml.safe_load(catalog_text())
    sim_regions, proxy_regions, urls = [], [], {}
    for i, region in enumerate(catalog["regions"]):
        sim = {**region, "ttft_ms": region["ttft_ms"] / SPEED_UP, "sim": {"ms_per_token": 2 / SPEED_UP}}
        sim_regions.append(sim)
        urls[region["id"]] = f"http://127.0.0.1:{sim_port + i}"
        proxy = {k: v for k, v in region.items() if k not in ("sim", "limits")}
        proxy_regions.append({**proxy, "provider": "openai", "base_url": f"{urls[region['id']]}/v1",
                              "timeouts": TIMEOUTS})
    (work / "sim.yaml").write_text(yaml.safe_dump({**catalog, "regions": sim_regions}))
    proxy_config = {**catalog, "regions": proxy_regions}
    proxy_config["ledger"] = {"url": "LEDGER"}
    (work / "proxy.yaml").write_text(yaml.safe_dump(proxy_config))
    return work / "proxy.yaml", urls


def _body(i: int) -> tuple[dict, dict[str, str]]:
    body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 16}
    if i % 5 == 0:
        body["stream"] = True
    return body, {"X-Suanli-Class": "batch" if i % 10 >= 7 else "interactive"}


async def _one(session: aiohttp.ClientSession, url: str, i: int) -> tuple[str, float, int, str]:
    """(outcome, seconds, attempts, region); outcome: ok, clean, dirty, 500 or hang."""
    body, headers = _body(i)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            async with session.post(url, data=orjson.dumps(body),
                                    headers={**headers, "Content-Type": "application/json"}) as response:
                raw = await response.read()
                attempts = int(response.headers.get("X-Suanli-Attempts", 0))
                region = response.headers.get("X-Suanli-Region", "-")
    except TimeoutError:
        return "hang", time.perf_counter() - started, 0, "-"
    elapsed = time.perf_counter() - started
    if response.status >= 500 and response.status not in (502, 503, 504):
        return "500", elapsed, attempts, region
    if response.status != 200:
        clean = b'"error"' in raw and raw.lstrip().startswith(b"{")
        ERRORS[f"{response.status} {raw[:160].decode(errors='replace')}"] += 1
        return ("clean" if clean else "dirty"), elapsed, attempts, region
    if body.get("stream"):
        if b'data: {"error"' in raw:
            return "clean", elapsed, attempts, region  # broke after the first byte: an error event
        if not raw.rstrip().endswith(b"data: [DONE]"):
            return "dirty", elapsed, attempts, region
    return "ok", elapsed, attempts, region


async def _load(url: str, requests: int, concurrency: int) -> list[tuple[str, float, int, str]]:
    results: list[tuple[str, float, int, str]] = []
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                results.append(await _one(session, url, i))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def _ledger_check(path: Path) -> str:
    """"exact" when every voucher's spend is the sum of its usage rows and no hold is pending."""
    with sqlite3.connect(path) as conn:
        pending = conn.execute("SELECT COUNT(*) FROM holds WHERE state = 'pending'").fetchone()[0]
        wrong = conn.execute(
            "SELECT COUNT(*) FROM vouchers v WHERE held_q != 0 OR amount_q - balance_q !="
            " (SELECT COALESCE(SUM(voucher_q), 0) FROM usage u WHERE u.voucher_id = v.id)"
        ).fetchone()[0]
        rows = conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    if pending or wrong:
        return f"WRONG ({pending} pending, {wrong} vouchers off)"
    return f"exact ({rows} rows)"


def _run(work: Path, config: Path, name: str, args: argparse.Namespace) -> tuple[list, str]:
    run_dir = work / name
    run_dir.mkdir()
    ledger = run_dir / "ledger.db"
    (run_dir / "proxy.yaml").write_text(config.read_text().replace("LEDGER", f"sqlite:///{ledger}"))
    port = _port_block(1)
    proxy = spawn(["serve", "--config", str(run_dir / "proxy.yaml"), "--port", str(port)],
                   f"http://127.0.0.1:{port}/health")
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        results = asyncio.run(_load(url, args.requests, args.concurrency))
    finally:
        proxy.terminate()
        proxy.wait(20)
    return results, _ledger_check(ledger)


def _faults(url: str, knobs: dict | None) -> None:
    method = "POST" if knobs else "DELETE"
    data = orjson.dumps(knobs) if knobs else None
    request = urllib.request.Request(f"{url}/sim/faults", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5):
        pass


def _first_two(config_path: Path) -> tuple[str, str]:
    """The two regions an interactive request tries first: the ones whose faults hurt most."""
    config = load_config(yaml.safe_load(config_path.read_text().replace("LEDGER", "sqlite:///unused.db")))
    ask = Ask(model="deepseek-flash", work_class="interactive", origin="east", input_tokens=20,
              output_tokens=16)
    balances = {v.id: v.amount for v in config.vouchers}
    options = rank(config, ask, State(balances=balances), datetime.now(UTC))
    return options[0].region.id, options[1].region.id


def _row(name: str, results: list, ledger: str, seconds: float) -> str:
    outcomes = collections.Counter(r[0] for r in results)
    latencies = sorted(r[1] for r in results)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    attempts = [r[2] for r in results if r[2]]
    ok = outcomes["ok"]
    return (f"{name:<10} {len(results):>8} {ok:>7} {100 * ok / len(results):>8.2f}% {outcomes['clean']:>6} "
            f"{outcomes['dirty'] + outcomes['500']:>6} {outcomes['hang']:>6} {p50:>8.1f} {p99:>8.1f} "
            f"{sum(attempts) / max(len(attempts), 1):>9.3f} {max(attempts, default=0):>5} "
            f"{len(results) / seconds:>7.0f}  {ledger}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    work = Path(tempfile.mkdtemp(prefix="suanli-failover-"))
    sim_port = _port_block(8)
    config, urls = _configs(work, sim_port)
    sim = spawn(["sim", "--config", str(work / "sim.yaml"), "--port", str(sim_port)],
                 f"http://127.0.0.1:{sim_port}/v1/models")
    lines, shares = [], ""
    try:
        started = time.perf_counter()
        clean, ledger = _run(work, config, "clean", args)
        lines.append(_row("no faults", clean, ledger, time.perf_counter() - started))
        failing, stalled = _first_two(config)
        _faults(urls[failing], {"error_rate": 0.3, "error_status": 503})
        _faults(urls[stalled], {"stall_ms": 5000})
        started = time.perf_counter()
        faulty, ledger = _run(work, config, "faulty", args)
        lines.append(_row("faults", faulty, ledger, time.perf_counter() - started))
        served = collections.Counter(r[3] for r in faulty)
        shares = ", ".join(f"{region} {count}" for region, count in served.most_common())
    finally:
        sim.terminate()
        sim.wait(20)
    print(f"{args.requests} chat requests (20% streamed, 30% batch), {args.concurrency} concurrent clients;")
    print(f"faults: {failing} answers 503 to 30% of calls, {stalled} stalls 5 s (first-byte timeout 0.5 s)")
    print(f"{'run':<10} {'requests':>8} {'ok':>7} {'success':>9} {'clean':>6} {'dirty':>6} {'hangs':>6} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'attempts':>9} {'max':>5} {'req/s':>7}  ledger")
    for line in lines:
        print(line)
    print(f"served by region under faults: {shares}")
    for error, count in ERRORS.most_common(3):
        print(f"{count} x {error}")


if __name__ == "__main__":
    main()
