"""``suanli traffic`` (and ``suanli demo --traffic``): mixed demo traffic against a running proxy.

What a small team sends in a day, compressed: interactive chat from the east (streamed and
whole answers, 40-300 output tokens), batch work marked ``X-Suanli-Class: batch`` (longer
answers), and one fine-tuning job. Watch it with ``suanli monitor --url URL``: interactive
stays in the east within its SLO, batch and training go west (and off-peak when they can wait),
the voucher that expires first is spent first, and the header shows the savings against greedy
routing and list price.

Every request is an ordinary OpenAI call over HTTP; the generator counts answers by status
and where interactive work was served, and prints a line every ``report_s`` seconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

__all__ = ["TrafficStats", "run_traffic"]

_QUESTIONS = [
    "东数西算工程的八大枢纽节点分别在哪里？",
    "算力券怎么申请，适合哪些初创团队？",
    "峰谷电价对训练任务的成本影响有多大？",
    "请用三句话介绍庆阳数据中心集群。",
    "How do compute vouchers in Shanghai work for model training?",
    "总结一下贵安数据中心的优势。",
]
_TRAINING_LINES = [
    {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "这是一个示例回答。" * 8}]}
    for q in _QUESTIONS
] * 20


@dataclass(slots=True)
class TrafficStats:
    """What the generator saw, by class."""

    east: frozenset[str] = frozenset()  # region ids in the east zone
    sent: Counter = field(default_factory=Counter)  # class -> requests
    status: Counter = field(default_factory=Counter)  # (class, status) -> answers
    regions: Counter = field(default_factory=Counter)  # (class, region) -> answers
    fine_tuning: str = "not started"

    def line(self) -> str:
        inter = {region: n for (cls, region), n in self.regions.items() if cls == "interactive"}
        served = sum(inter.values()) or 1
        east = sum(n for region, n in inter.items() if region in self.east) / served
        batch = {region: n for (cls, region), n in self.regions.items() if cls == "batch"}
        errors = {f"{cls} {code}": n for (cls, code), n in self.status.items() if code != 200}
        return (
            f"sent {sum(self.sent.values())}"
            f" (interactive {self.sent['interactive']}, batch {self.sent['batch']})"
            f" | interactive in the east {100 * east:.0f}% | batch: {_top(batch)}"
            f" | fine-tuning: {self.fine_tuning} | errors: {errors or 'none'}"
        )


def _top(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{region} {100 * n / total:.0f}%" for region, n in ranked) or "-"


async def _ask(session: aiohttp.ClientSession, base: str, stats: TrafficStats, rng: random.Random,
               key: str | None) -> None:
    batch = rng.random() < 0.35
    work_class = "batch" if batch else "interactive"
    stream = not batch and rng.random() < 0.5
    body = {
        "model": "deepseek-flash",
        "messages": [{"role": "user", "content": rng.choice(_QUESTIONS)}],
        "max_tokens": rng.randint(200, 400) if batch else rng.randint(40, 300),
        "stream": stream,
    }
    headers = {"X-Suanli-Class": work_class, "X-Suanli-Origin": "east", "Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    stats.sent[work_class] += 1
    try:
        url = f"{base}/chat/completions"
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            await response.read()
            stats.status[(work_class, response.status)] += 1
            if response.status == 200:
                stats.regions[(work_class, response.headers.get("X-Suanli-Region", "?"))] += 1
    except (aiohttp.ClientError, TimeoutError):
        stats.status[(work_class, 0)] += 1


async def _client(
    session: aiohttp.ClientSession, base: str, stats: TrafficStats, seed: int, end: float, key: str | None
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < end:
        await _ask(session, base, stats, rng, key)
        await asyncio.sleep(rng.uniform(0.2, 0.8))


async def _fine_tune(session: aiohttp.ClientSession, base: str, stats: TrafficStats, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    form = aiohttp.FormData()
    form.add_field("purpose", "fine-tune")
    lines = b"".join(orjson.dumps(line) + b"\n" for line in _TRAINING_LINES)
    form.add_field("file", lines, filename="train.jsonl", content_type="application/jsonl")
    try:
        async with session.post(f"{base}/files", data=form, headers=headers) as response:
            uploaded = await response.json()
        create = {"model": "deepseek-flash", "training_file": uploaded["id"]}
        async with session.post(f"{base}/fine_tuning/jobs", headers=headers, json=create) as response:
            job = await response.json()
        if "id" not in job:
            stats.fine_tuning = f"refused: {job.get('error', {}).get('message', job)}"
            return
        while True:
            async with session.get(f"{base}/fine_tuning/jobs/{job['id']}", headers=headers) as response:
                job = await response.json()
            where = (job.get("suanli") or {}).get("region")
            stats.fine_tuning = f"{job.get('status')}{f' at {where}' if where else ''}"
            if job.get("status") in ("succeeded", "failed", "cancelled"):
                return
            await asyncio.sleep(5)
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
        stats.fine_tuning = f"not started ({type(exc).__name__})"


async def run_traffic(base: str, *, clients: int = 6, seconds: float = 300.0, key: str | None = None,
                      report_s: float = 10.0, east: frozenset[str] = frozenset(),
                      quiet: bool = False) -> TrafficStats:
    """Send mixed traffic to ``base`` (ending in ``/v1``) for ``seconds``; the counts."""
    stats = TrafficStats(east=east)
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tuner = asyncio.create_task(_fine_tune(session, base, stats, key))
        workers = [
            asyncio.create_task(_client(session, base, stats, seed, end, key)) for seed in range(clients)
        ]
        try:
            while not all(w.done() for w in workers):
                await asyncio.wait(workers, timeout=report_s)
                if not quiet:
                    print(stats.line(), flush=True)
        finally:
            # Stopped early (the demo interrupted): every client ends before the session closes.
            for task in (tuner, *workers):
                task.cancel()
            await asyncio.gather(tuner, *workers, return_exceptions=True)
    return stats
