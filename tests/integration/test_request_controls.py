"""Per-request controls over HTTP with the openai SDK: a random price cap per request is never
exceeded on the ledger, ``regions``/``exclude`` never violated, a key's residency never widened;
``sort: latency`` takes the fastest region, ``session`` is priced by its cache, unknown fields are a 400."""

from __future__ import annotations

import asyncio
import json
import random
import re
import urllib.request
from collections import Counter
from pathlib import Path

import openai
import pytest

from tests.harness import running_proxy, small_config

MASTER = "sk-master-controls-test"
MESSAGES = [{"role": "user", "content": "西部的算力为什么比东部便宜？"}]
REGIONS = ("shanghai", "wuhan", "qingyang")


def _new_key(proxy, **spec) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy.port}/admin/keys", data=json.dumps({"name": "k", **spec}).encode(),
        method="POST",
    )
    request.add_header("Authorization", f"Bearer {MASTER}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["key"]


def test_random_caps_regions_and_residency_hold_over_1000_requests(tmp_path: Path):
    rng = random.Random(22)
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:
        eastern = _new_key(proxy, allowed_regions=["shanghai", "wuhan"])

        def draw(i: int) -> dict:
            controls: dict = {"max_price_yuan_per_mtok": round(rng.uniform(2.0, 8.0), 3)}
            if rng.random() < 0.4:
                controls["regions"] = rng.sample(REGIONS, rng.randint(1, 3))
            if rng.random() < 0.3:
                controls["exclude"] = rng.sample(REGIONS, 1)
            return {
                "i": i,
                "key": eastern if i % 2 else MASTER,
                "controls": controls,
                "class": rng.choice(("interactive", "batch")),
                "max_tokens": rng.randint(1, 30),
            }

        plans = [draw(i) for i in range(1000)]

        async def run() -> list[tuple[dict, int, str]]:
            clients = {k: openai.AsyncOpenAI(base_url=proxy.base_url, api_key=k, max_retries=0)
                       for k in (eastern, MASTER)}
            gate = asyncio.Semaphore(16)

            async def one(plan: dict) -> tuple[dict, int, str]:
                async with gate:
                    try:
                        raw = await clients[plan["key"]].chat.completions.with_raw_response.create(
                            model="deepseek-flash", messages=MESSAGES, max_tokens=plan["max_tokens"],
                            extra_body={"suanli": plan["controls"]},
                            extra_headers={"X-Suanli-Class": plan["class"]},
                        )
                        return plan, 200, raw.headers["x-request-id"]
                    except openai.APIStatusError as exc:
                        return plan, exc.status_code, exc.message

            try:
                return await asyncio.gather(*(one(p) for p in plans))
            finally:
                for client in clients.values():
                    await client.close()

        results = asyncio.run(run())
        rows = {row.request_id: row for row in proxy.call(lambda r: r.ledger.usage())}
        outcomes: Counter = Counter()
        for plan, status, detail in results:
            controls = plan["controls"]
            cap = controls["max_price_yuan_per_mtok"]
            allowed = set(controls.get("regions", REGIONS)) - set(controls.get("exclude", ()))
            if plan["key"] == eastern:
                allowed &= {"shanghai", "wuhan"}
            if status == 200:
                row = rows[detail]
                assert row.region in allowed, (plan, row.region)
                price = row.cost_yuan * 1e6 / (row.prompt_tokens + row.completion_tokens)
                assert price <= cap + 1e-9, (plan, row.region, price)
                outcomes[f"served:{row.region}"] += 1
            elif status == 503 and "the cheapest eligible now is" in detail:
                cheapest = float(re.search(r"cheapest eligible now is ([0-9.]+) at (\w+)", detail).group(1))
                assert cheapest > cap - 1e-4
                outcomes["over_cap"] += 1
            elif status == 403:
                asked = set(controls.get("regions", REGIONS))
                assert plan["key"] == eastern and not asked & {"shanghai", "wuhan"}
                outcomes["outside_key"] += 1
            else:
                assert status in (400, 503), (status, detail)  # e.g. excluded the pinned / nothing left
                outcomes[f"other:{status}"] += 1
        assert len(rows) == sum(n for k, n in outcomes.items() if k.startswith("served:"))
        assert outcomes["over_cap"] > 50 and outcomes["outside_key"] > 5
        assert sum(n for k, n in outcomes.items() if k.startswith("served:")) > 300
        assert {"served:shanghai", "served:wuhan", "served:qingyang"} <= set(outcomes)


def test_sort_latency_session_and_unknown_fields(tmp_path: Path):
    config = small_config(tmp_path, vouchers=[])  # cash only: cost alone decides the default order
    with running_proxy(config) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)

        def region(**suanli) -> str:
            raw = client.chat.completions.with_raw_response.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=5, extra_body={"suanli": suanli}
            )
            return raw.headers["x-suanli-region"]

        assert region() == "wuhan"  # cheaper than shanghai, both within the SLO
        assert region(sort="latency") == "shanghai"  # 4 + 40 ms against 14 + 50 ms
        assert region(sort="latency", exclude=["shanghai"]) == "wuhan"
        assert region(regions=["shanghai"]) == "shanghai"
        assert region(session="s-1", regions=["shanghai"]) == "shanghai"
        # No cache price here (cached_input = input): staying saves nothing, the cheaper region wins
        # (tests/integration/test_cache_affinity.py has a session that stays for its cache).
        assert region(session="s-1") == "wuhan"
        assert region(session="s-2") == "wuhan"
        with pytest.raises(openai.BadRequestError) as caught:
            region(provider={"order": ["wuhan"]})
        assert caught.value.body["param"] == "suanli.provider"
        with pytest.raises(openai.InternalServerError) as caught:
            region(max_price_yuan_per_mtok=0.5)
        assert caught.value.body["code"] == "over_max_price"
        assert "cheapest eligible now is" in caught.value.body["message"]
        with pytest.raises(openai.InternalServerError) as caught:
            region(exclude=["shanghai", "wuhan"])  # qingyang alone is over the SLO: a 503 saying why
        assert "shanghai: excluded by the request's suanli.exclude" in caught.value.body["message"]
        assert proxy.call(lambda r: r.ledger.pending_holds()) == 0
        assert len(proxy.call(lambda r: r.ledger.usage())) == 7
