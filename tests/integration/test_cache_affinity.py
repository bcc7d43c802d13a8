"""Prompt-cache prices live, through the official openai SDK: a conversation's turns stay where their
prompt is cached while that is cheapest and are billed the cached price to the yuan; a request
straddling a band edge is priced at its start on hold and settle alike."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import yaml

from suanli.config import Config
from suanli.optimizer import charge, charge_reported
from suanli.providers.tokenizer import count_prompt_tokens
from suanli.router.core.clocks import VirtualClock
from suanli.router.ops.cli import main
from tests.harness import running_proxy, small_config
from tests.integration.workload_helpers import TEN_AM, wait_for

pytestmark = pytest.mark.timeout(60)
QUESTIONS = ["西部的算力为什么比东部便宜？", "那么东数西算的网络延迟呢？", "请总结一下。"]


def _config(tmp_path: Path, **shanghai: Any) -> Config:
    """small_config where shanghai's prompt cache costs a tenth of its input; wuhan has no cache price."""
    base = small_config(tmp_path)
    regions: list[dict[str, Any]] = [r.model_dump(exclude_none=True) for r in base.regions]
    east = next(r for r in regions if r["id"] == "shanghai")
    east["models"][0]["price"] = {"input": 2.0, "cached_input": 0.2, "output": 8.0}
    east["models"][0].update(shanghai)
    return small_config(tmp_path, regions=regions, vouchers=[])


def _ask(client: openai.OpenAI, messages: list[dict], how: str, *, stream: bool = False, **extra: Any):
    """One turn, the session named ``how``: in the body, the header, the ``user`` field, or not at all."""
    options: dict[str, Any] = {"extra_body": dict(extra.pop("extra_body", {}))}
    if how == "body":
        options["extra_body"].setdefault("suanli", {})["session"] = "conv-1"
    elif how == "header":
        options["extra_headers"] = {"X-Suanli-Session": "conv-1"}
    elif how == "user":
        options["user"] = "user-17"
    if stream:
        options["stream_options"] = {"include_usage": True}
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=messages, max_tokens=5, stream=stream, **options
    )
    region = raw.headers["x-suanli-region"]
    request_id = raw.headers["x-request-id"]
    if not stream:
        answer = raw.parse()
        return region, request_id, answer.choices[0].message.content, answer.usage
    text, usage = "", None
    for event in raw.parse():
        if event.choices:
            text += event.choices[0].delta.content or ""
        usage = event.usage or usage
    return region, request_id, text, usage


def _exact(config: Config, row, cached: int, factor: float = 1.0) -> float:
    offer = config.region(row.region).offer("deepseek-flash")
    return charge_reported(
        offer, prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
        work_class="interactive", factor=factor, cached_tokens=cached,
    ).cost_yuan


@pytest.mark.parametrize("how", ["body", "header", "user", "prefix"])
def test_turns_stay_where_cached_and_pay_the_cached_price(tmp_path: Path, how: str, capsys):
    clock = VirtualClock(TEN_AM, speed=0)
    config = _config(tmp_path)
    with running_proxy(config, clock=clock) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        messages = [{"role": "system", "content": "You are a terse analyst of China's compute market."},
                    {"role": "user", "content": QUESTIONS[0]}]
        # The first turn is sent to shanghai (wuhan is cheaper at list price: 1.8 against 2.0).
        first = _ask(client, messages, how, extra_body={"suanli": {"regions": ["shanghai"]}})
        assert first[0] == "shanghai" and first[3].prompt_tokens_details.cached_tokens == 0
        turns = [first]
        for n, question in enumerate(QUESTIONS[1:], 1):
            clock.advance(30)
            messages = [*messages, {"role": "assistant", "content": turns[-1][2]},
                        {"role": "user", "content": question}]
            turns.append(_ask(client, messages, how, stream=n == 2))
        rows = {u.request_id: u for u in proxy.call(lambda r: r.ledger.usage())}
        for region, request_id, _, usage in turns[1:]:
            cached = usage.prompt_tokens_details.cached_tokens
            assert region == "shanghai" and cached > 0  # stayed: its cached prompt makes it cheapest
            row = rows[request_id]
            assert row.cost_yuan == pytest.approx(_exact(config, row, cached), rel=1e-12)
            assert row.cost_yuan < _exact(config, row, 0)
        cache = proxy.call(lambda r: r.metrics.cache_report())  # the status document's "cache"
        saved = sum(_exact(config, rows[t[1]], 0) - rows[t[1]].cost_yuan for t in turns[1:])
        assert cache["regions"]["shanghai"]["hits"] == 2 and cache["saved_yuan"] == pytest.approx(saved)
        # `suanli report` reads the same hits and savings back from the ledger
        cli = tmp_path / "cli.yaml"
        cli.write_text(yaml.safe_dump({"ledger": {"url": proxy.config.ledger.url}, "vouchers": [],
                                       "regions": [r.model_dump(mode="json", exclude_none=True)
                                                   for r in config.regions]}))
        capsys.readouterr()
        window = ["--since", "2026-12-01T00:00:00+08:00", "--until", "2026-12-02T00:00:00+08:00"]
        assert main(["report", "--config", str(cli), *window, "--format", "json"]) == 0
        reported = orjson.loads(capsys.readouterr().out)["cache"]
        (shanghai,) = [r for r in reported["regions"] if r["region"] == "shanghai"]
        assert shanghai["hits"] == 2 and shanghai["saved_yuan"] == pytest.approx(saved, abs=1e-6)
        assert main(["report", "--config", str(cli), *window]) == 0
        assert "prompt cache" in capsys.readouterr().out
        # Past the cache's TTL nothing is cached anywhere: the next turn goes to the cheaper wuhan.
        clock.advance(301)
        messages = [*messages, {"role": "assistant", "content": turns[-1][2]},
                    {"role": "user", "content": "谢谢。"}]
        assert _ask(client, messages, how)[0] == "wuhan"


def test_a_request_straddling_a_band_edge_pays_its_start_band(tmp_path: Path):
    peak = {"bands": [{"days": "weekdays", "window": "09:00-12:00", "factor": 2.0}]}
    config = _config(tmp_path, **peak)
    config = config.model_copy(update={"vouchers": small_config(tmp_path, vouchers=[
        {"id": "sh-credit", "region": "shanghai", "kind": "credit", "amount": 1.0,
         "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}]).vouchers})
    clock = VirtualClock(TEN_AM.replace(hour=11, minute=59, second=50), speed=0)  # a Tuesday, in the peak
    body = {"model": "shanghai/deepseek-flash", "max_tokens": 5,
            "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    offer = config.region("shanghai").offer("deepseek-flash")
    inputs = count_prompt_tokens("chat/completions", body)
    with running_proxy(config, clock=clock, sim_latency_scale=1.0) as proxy:
        sim = proxy.call(lambda r: r.base_url("shanghai")).removesuffix("/v1")
        urllib.request.urlopen(urllib.request.Request(  # the answer takes 1.5 s: the clock moves meanwhile
            f"{sim}/sim/faults", data=orjson.dumps({"stall_ms": 1500}), method="POST"), timeout=5).close()
        client = openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0)
        answer: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: answer.update(raw=client.chat.completions.with_raw_response.create(**body))
        )
        worker.start()

        def held() -> float:
            return next(v["held"] for v in proxy.call(lambda r: r.voucher_report()) if v["id"] == "sh-credit")

        on_hold = wait_for(held, what="the hold")
        clock.set(TEN_AM.replace(hour=12, minute=0, second=30))  # off the peak before it answers
        worker.join(20)
        rows = proxy.call(lambda r: r.ledger.usage())
    peak_estimate = charge(offer, input_tokens=inputs, output_tokens=5, work_class="interactive", factor=2.0)
    assert on_hold == pytest.approx(peak_estimate.cost_yuan, rel=1e-9)  # held at the start's band
    (row,) = rows
    assert row.time > TEN_AM.replace(hour=12)  # settled after the edge...
    # ...at the start's band
    assert row.cost_yuan == pytest.approx(_exact(config, row, 0, factor=2.0), rel=1e-12)
    assert row.voucher_units == pytest.approx(row.cost_yuan, rel=1e-12)
    assert answer["raw"].headers["x-suanli-region"] == "shanghai"


