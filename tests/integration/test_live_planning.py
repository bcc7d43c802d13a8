"""The live proxy plans: voucher shadow prices, west for live batch, learned token ratios.

Each test runs the real proxy (or the Router SDK) on loopback against sim platforms, on a
frozen clock, and waits for the re-planner's first plan before it sends traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from suanli.config import load_config
from suanli.optimizer import Ask, State, rank
from suanli.providers.sim import SimFleet
from suanli.router import RequestContext, Router
from tests.harness import ProxyThread, running_proxy

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: no off-peak window
MESSAGES = [{"role": "user", "content": "请用三句话介绍东数西算工程，以及庆阳和中卫的数据中心。"}]

pytestmark = pytest.mark.timeout(60)


def region(rid: str, zone: str, price: float, *, ttft_ms: int = 40, **extra: Any) -> dict[str, Any]:
    rtt = {"east": 5, "west": 30} if zone == "east" else {"east": 30, "west": 5}
    out = {"id": rid, "zone": zone, "provider": "sim", "rtt_ms": rtt, "ttft_ms": ttft_ms,
           "capabilities": ["chat", "batch"],
           "models": [{"name": "deepseek-flash", "price": {"input": price, "output": 4 * price},
                       **extra.pop("offer", {})}]}
    out.update(extra)
    return out


def config(tmp_path: Path, regions: list[dict], vouchers: list[dict], demand: list[dict] = ()):
    return load_config({
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "classes": {"interactive": {"latency_slo_ms": 300}, "batch": {"deadline_s": 86400}},
        "regions": regions, "vouchers": vouchers, "demand": list(demand),
    })


def tokens_voucher(vid: str, rid: str, amount: int, expires: datetime) -> dict[str, Any]:
    return {"id": vid, "region": rid, "kind": "tokens", "amount": amount,
            "valid_from": (T0 - timedelta(days=1)).isoformat(), "expires": expires.isoformat()}


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def greedy_choice(cfg, work_class: str) -> tuple[str, str | None]:
    ask = Ask("deepseek-flash", work_class, "east", 40, 100)  # type: ignore[arg-type]
    best = rank(cfg, ask, State(balances={v.id: v.amount for v in cfg.vouchers}), T0)[0]
    return best.region.id, best.voucher.id if best.voucher else None


def ask_through(client: openai.OpenAI, work_class: str = "interactive") -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=100,
        extra_headers={"X-Suanli-Class": work_class},
    )
    return raw.headers["x-suanli-region"], raw.headers["x-suanli-voucher"]


def planned_proxy(cfg) -> ProxyThread:
    return running_proxy(cfg, clock=lambda: T0)  # type: ignore[return-value]


def test_expiring_voucher_is_spent_first_once_a_plan_exists(tmp_path: Path):
    # Two equal east regions; shanghai is nearer, so a greedy router spends its long-lived
    # voucher first while wuhan's expires within the hour mostly unused.
    cfg = config(
        tmp_path,
        [region("shanghai", "east", 2.0, ttft_ms=30), region("wuhan", "east", 2.0, ttft_ms=60)],
        [tokens_voucher("wuhan-expiring", "wuhan", 500_000, T0 + timedelta(hours=1)),
         tokens_voucher("shanghai-long", "shanghai", 1_000_000, T0 + timedelta(days=30))],
        [{"class": "interactive", "model": "deepseek-flash", "requests_per_hour": 100,
          "input_tokens": 300, "output_tokens": 1000}],
    )
    assert greedy_choice(cfg, "interactive") == ("shanghai", "shanghai-long")
    with planned_proxy(cfg) as proxy:
        wait_for(lambda: proxy.call(lambda r: r.plan_info()["plans"]) >= 1)
        info = proxy.call(lambda r: r.plan_info())
        assert info["shadow_prices"]["shanghai-long"] > 0 == info["shadow_prices"]["wuhan-expiring"]
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
        served = [ask_through(client) for _ in range(5)]
        assert served == [("wuhan", "wuhan-expiring")] * 5
        assert proxy.call(lambda r: r.ledger.balance("shanghai-long")) == 1_000_000


def test_live_batch_goes_west_at_once_and_leaves_the_east_voucher_to_interactive(tmp_path: Path):
    # The wuhan voucher cannot cover the interactive traffic the prior expects: spending it on
    # batch would push interactive requests onto cash in the east, where cash costs most.
    cfg = config(
        tmp_path,
        [region("shanghai", "east", 2.0), region("wuhan", "east", 1.8),
         region("qingyang", "west", 1.4, ttft_ms=380)],
        [tokens_voucher("wuhan-tokens", "wuhan", 200_000, T0 + timedelta(days=30))],
        [{"class": "interactive", "model": "deepseek-flash", "requests_per_hour": 1000,
          "input_tokens": 200, "output_tokens": 1000}],
    )
    assert greedy_choice(cfg, "batch") == ("wuhan", "wuhan-tokens")
    with planned_proxy(cfg) as proxy:
        wait_for(lambda: proxy.call(lambda r: r.plan_info()["plans"]) >= 1)
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
        started = time.monotonic()
        batch = [ask_through(client, "batch") for _ in range(3)]
        assert time.monotonic() - started < 10  # served now, not deferred to a cheaper hour
        assert batch == [("qingyang", "none")] * 3
        region_id, voucher = ask_through(client, "interactive")
        assert region_id in {"shanghai", "wuhan"}  # the SLO keeps interactive east


def test_a_material_balance_change_replans_without_the_clock_moving(tmp_path: Path):
    cfg = config(
        tmp_path,
        [region("shanghai", "east", 2.0), region("wuhan", "east", 2.0)],
        [tokens_voucher("wuhan-small", "wuhan", 1_000, T0 + timedelta(days=30))],
    )
    with planned_proxy(cfg) as proxy:
        wait_for(lambda: proxy.call(lambda r: r.plan_info()["plans"]) >= 1)
        assert proxy.call(lambda r: r.plan_info()["reason"]) == "start"
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
        assert ask_through(client) == ("wuhan", "wuhan-small")  # > 10% of 1,000 tokens
        wait_for(lambda: proxy.call(lambda r: r.plan_info()["plans"]) >= 2)
        info = proxy.call(lambda r: r.plan_info())
        assert info["reason"] == "balance" and info["planned_at"] == T0.isoformat()


def test_an_ejected_region_replans_without_it(tmp_path: Path):
    cfg = config(
        tmp_path,
        [region("shanghai", "east", 2.0, sim={"error_rate": 1.0, "error_status": 503}),
         region("wuhan", "east", 2.2)],
        [],
    )
    cfg = cfg.model_copy(update={"health": cfg.health.model_validate(
        {"probes": {"enabled": False}, "ejection": {"consecutive_5xx": 1}})})
    with planned_proxy(cfg) as proxy:
        wait_for(lambda: proxy.call(lambda r: r.plan_info()["plans"]) >= 1)
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
        assert ask_through(client) == ("wuhan", "none")  # shanghai failed before the first byte
        wait_for(lambda: proxy.call(lambda r: r.plan_info()["plans"]) >= 2)
        assert proxy.call(lambda r: r.plan_info()["reason"]) == "health"


async def test_a_region_reporting_more_tokens_than_configured_loses_traffic_once_learned(tmp_path: Path):
    # The platform "cheapsim" really counts 2 tokens per reference token; the config says 1.
    truth = config(tmp_path / "truth", [region("cheapsim", "east", 1.0, offer={"token_ratio": 2.0})], [])
    async with SimFleet(truth, latency_scale=0.0) as fleet:
        liar = region("cheapsim", "east", 1.0, base_url=fleet.urls["cheapsim"])
        honest = region("honest", "east", 1.5)
        cfg = config(tmp_path, [liar, honest], [])
        async with Router(cfg, clock=lambda: T0, sim_latency_scale=0.0) as router:
            served = []
            for _ in range(25):
                reply = await router.chat_completions(
                    model="deepseek-flash", messages=MESSAGES, max_tokens=50, context=RequestContext()
                )
                served.append(reply.routing.region)
            learned = router.plan_info()["token_ratios"]["cheapsim/deepseek-flash"]
    assert served[0] == "cheapsim"
    assert served[-3:] == ["honest"] * 3
    assert served.count("cheapsim") == 20  # the default min_samples: then the learned ratio takes over
    assert learned["configured"] == 1.0 and learned["in_use"] == pytest.approx(2.0, abs=0.02)
