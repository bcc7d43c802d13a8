"""Fault scenarios through the openai SDK against sim platforms with their fault knobs.

After each scenario the ledger must be exact: every voucher's amount minus its balance is
the sum of what its usage rows drew, no hold is left pending, and the hash chain verifies.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import ProxyThread, running_proxy, small_config

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "user", "content": "东数西算是什么？"}]
FAR = {"valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}
NO_PROBES = {"probes": {"enabled": False}}


class Clock:
    """A router clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _region(rid: str, price: float, *, ttft_ms: float = 20, zone: str = "east", **extra: Any) -> dict:
    return {"id": rid, "zone": zone, "provider": "sim", "rtt_ms": {"east": 10, "west": 30},
            "ttft_ms": ttft_ms, "capabilities": ["chat", "completions"], "sim": {"ms_per_token": 0},
            "models": [{"name": "deepseek-flash", "price": {"input": price, "output": 4 * price}}], **extra}


def _config(tmp_path: Path, regions: list[dict], *, health: dict | None = None, vouchers: list | None = None):
    health = {**NO_PROBES, **(health or {})}
    return small_config(tmp_path, regions=regions, vouchers=vouchers or [], health=health)


def _client(proxy: ProxyThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0, timeout=30)


def _faults(proxy: ProxyThread, region: str, **knobs: Any) -> None:
    url = proxy.call(lambda r: r._fleet.urls[region]).removesuffix("/v1")
    if knobs:
        httpx.post(f"{url}/sim/faults", json=knobs).raise_for_status()
    else:
        httpx.delete(f"{url}/sim/faults").raise_for_status()


def _sim_stats(proxy: ProxyThread, region: str) -> dict:
    url = proxy.call(lambda r: r._fleet.urls[region]).removesuffix("/v1")
    return httpx.get(f"{url}/sim/stats").json()


def _ask(client: openai.OpenAI, work_class: str = "interactive", **body: Any):
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES, max_tokens=4,
        extra_headers={"X-Suanli-Class": work_class}, **body,
    )
    if body.get("stream"):
        for _ in raw.parse():
            pass
    return raw.headers["x-suanli-region"], int(raw.headers["x-suanli-attempts"])


def _stats(proxy: ProxyThread) -> dict[str, dict]:
    return proxy.call(lambda r: r.region_stats())


def assert_ledger_exact(proxy: ProxyThread) -> None:
    def check(router) -> None:
        ledger = router.ledger
        assert ledger.pending_holds() == 0
        assert ledger.verify_chain() is None
        rows = ledger.usage()
        for status in ledger.vouchers():
            drawn = sum(row.voucher_units for row in rows if row.voucher_id == status.id)
            assert status.amount - status.balance == pytest.approx(drawn, abs=1e-9)
            assert status.held == 0
        for row in rows:
            assert row.cost_yuan == pytest.approx(row.cash_yuan + row.voucher_yuan, abs=1e-12)

    proxy.call(check)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _down_region() -> dict:
    """An OpenAI-compatible region whose port refuses connections."""
    region = {**_region("down", 1.0), "provider": "openai", "base_url": f"http://127.0.0.1:{_closed_port()}/v1"}
    del region["sim"]
    return region


def test_a_region_down_fails_over_then_is_ejected(tmp_path: Path):
    down = _down_region()
    config = _config(tmp_path, [down, _region("up", 2.0)],
                     health={"ejection": {"consecutive_gateway_failures": 2}})
    with running_proxy(config) as proxy:
        client = _client(proxy)
        assert [_ask(client) for _ in range(4)] == [("up", 2), ("up", 2), ("up", 1), ("up", 1)]
        stats = _stats(proxy)
        assert stats["down"]["state"] == "ejected" and stats["down"]["ejections"] == 1
        assert stats["down"]["ejected_until"] is not None
        assert stats["up"]["state"] == "ok"
        assert len(proxy.call(lambda r: r.ledger.usage())) == 4
        assert_ledger_exact(proxy)


def test_a_slow_region_loses_interactive_traffic_but_keeps_batch(tmp_path: Path):
    health = {"latency": {"window": 4, "min_samples": 2}}
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], health=health)
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        client = _client(proxy)
        assert [_ask(client, stream=True)[0] for _ in range(3)] == ["cheap"] * 3
        _faults(proxy, "cheap", stall_ms=450)
        # Streams show the late first token (a whole answer's time is no first token).
        regions = [_ask(client, stream=True)[0] for _ in range(8)]
        # Once the window's median is over the 400 ms SLO the interactive traffic moves and stays moved.
        assert regions[-1] == "dear"
        assert regions.index("dear") <= 4
        assert all(region == "dear" for region in regions[regions.index("dear"):])
        assert _ask(client, "batch")[0] == "cheap"
        assert _stats(proxy)["cheap"]["ttft_ms"]["p95"] >= 450
        assert_ledger_exact(proxy)


def test_a_first_byte_timeout_fails_over(tmp_path: Path):
    slow = _region("slow", 1.0, timeouts={"connect_s": 0.2, "first_byte_s": 0.3, "idle_s": 1})
    config = _config(tmp_path, [slow, _region("fast", 2.0)])
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        _faults(proxy, "slow", stall_ms=2000)
        started = time.perf_counter()
        # A stream fails over (a whole answer would not: test_in_doubt.py); the abandoned
        # attempt is recorded in doubt.
        assert _ask(_client(proxy), stream=True) == ("fast", 2)
        assert time.perf_counter() - started < 1.6  # 0.5 s of timeouts, not the 2 s stall
        statuses = [(row.region, row.status) for row in proxy.call(lambda r: r.ledger.usage())]
        assert statuses == [("slow", 504), ("fast", 200)]
        assert_ledger_exact(proxy)


def test_a_5xx_burst_ejects_the_region_and_a_trial_brings_it_back(tmp_path: Path):
    clock = Clock()
    health = {"ejection": {"consecutive_5xx": 3, "base_ejection_s": 30}}
    config = _config(tmp_path, [_region("flaky", 1.0), _region("steady", 2.0)], health=health)
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        _faults(proxy, "flaky", error_rate=1.0, error_status=503)
        assert [_ask(client) for _ in range(5)] == [("steady", 2)] * 3 + [("steady", 1)] * 2
        assert _stats(proxy)["flaky"]["state"] == "ejected"
        assert _sim_stats(proxy, "flaky")["status_503"] == 3
        _faults(proxy, "flaky")  # recovered, but still ejected until the clock says so
        clock.advance(29)
        assert _ask(client) == ("steady", 1)
        clock.advance(2)
        assert _ask(client) == ("flaky", 1)  # the half-open trial
        stats = _stats(proxy)["flaky"]
        assert stats["state"] == "ok" and stats["ejections"] == 1
        assert _ask(client) == ("flaky", 1)
        assert_ledger_exact(proxy)


def test_a_429_storm_honours_retry_after_and_the_client_gets_429_when_nothing_is_left(tmp_path: Path):
    clock = Clock()
    config = _config(tmp_path, [_region("busy", 1.0), _region("spare", 2.0)])
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        _faults(proxy, "busy", error_rate=1.0, error_status=429)  # answers Retry-After: 1
        assert _ask(client) == ("spare", 2)
        assert _stats(proxy)["busy"]["state"] == "cooling"
        assert _ask(client) == ("spare", 1)  # cooling: not even tried
        _faults(proxy, "spare", error_rate=1.0, error_status=429)
        clock.advance(1.5)  # busy may be tried again, and is still throttling
        with pytest.raises(openai.RateLimitError) as caught:
            _ask(client)
        headers = caught.value.response.headers
        assert headers["retry-after"] == "1"
        assert headers["x-should-retry"] == "true"
        assert caught.value.body["code"] == "rate_limit_exceeded"
        # Everything cooling: answered at once with 429, no upstream call.
        calls = _sim_stats(proxy, "busy")["requests"]
        with pytest.raises(openai.RateLimitError):
            _ask(client)
        assert _sim_stats(proxy, "busy")["requests"] == calls
        _faults(proxy, "busy")
        clock.advance(1.5)
        assert _ask(client) == ("busy", 1)
        assert_ledger_exact(proxy)


def test_region_limits_send_overflow_to_the_next_region_then_429(tmp_path: Path):
    regions = [_region("small", 1.0, limits={"rpm": 2}), _region("other", 2.0, limits={"rpm": 1})]
    config = _config(tmp_path, regions)
    with running_proxy(config) as proxy:
        client = _client(proxy)
        assert [_ask(client) for _ in range(3)] == [("small", 1), ("small", 1), ("other", 1)]
        with pytest.raises(openai.RateLimitError) as caught:
            _ask(client)
        assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
        assert caught.value.response.headers["x-should-retry"] == "true"
        stats = _stats(proxy)
        assert (stats["small"]["rpm_used"], stats["small"]["rpm_limit"]) == (2, 2)
        assert stats["small"]["in_flight"] == 0
        assert_ledger_exact(proxy)


def test_a_reset_mid_stream_ends_with_an_error_event_and_no_spliced_output(tmp_path: Path):
    vouchers = [{"id": "cheap-tokens", "region": "cheap", "kind": "tokens", "amount": 10000, **FAR}]
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], vouchers=vouchers)
    with running_proxy(config) as proxy:
        _faults(proxy, "cheap", reset_after_chunks=4)
        stream = _client(proxy).chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=20, stream=True
        )
        assert stream.headers["x-suanli-region"] == "cheap"
        chunks = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream.parse():
                chunks.append(chunk)
        assert "broke" in caught.value.message
        assert 0 < len(chunks) <= 4
        assert len({chunk.id for chunk in chunks}) == 1  # one upstream answer, nothing spliced on
        assert _sim_stats(proxy, "dear").get("requests", 0) == 0
        (row,) = proxy.call(lambda r: r.ledger.usage())
        assert row.status == 502 and row.region == "cheap"
        assert 0 < row.completion_tokens <= 4
        assert row.voucher_units == row.tokens
        assert_ledger_exact(proxy)


def test_a_client_disconnect_cancels_upstream_and_settles_what_was_consumed(tmp_path: Path):
    config = _config(tmp_path, [_region("only", 1.0, sim={"ms_per_token": 40})])
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        stream = _client(proxy).chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=100, stream=True
        )
        for n, _ in enumerate(stream):
            if n == 3:
                break
        stream.response.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            proxy.call(lambda r: r.ledger.pending_holds()) or not _sim_stats(proxy, "only").get("disconnects")
        ):
            time.sleep(0.05)
        assert _sim_stats(proxy, "only").get("disconnects") == 1
        (row,) = proxy.call(lambda r: r.ledger.usage())
        assert row.status == 499
        assert 3 <= row.completion_tokens < 100
        assert _stats(proxy)["only"]["in_flight"] == 0
        assert_ledger_exact(proxy)


def test_an_exhausted_balance_is_marked_on_the_ledger_not_retried_forever(tmp_path: Path):
    vouchers = [{"id": "cheap-tokens", "region": "cheap", "kind": "tokens", "amount": 10000, **FAR}]
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], vouchers=vouchers)
    with running_proxy(config) as proxy:
        client = _client(proxy)
        _faults(proxy, "cheap", error_rate=1.0, error_status=402)
        # The voucher is gone upstream; then the region's cash too; then cheap is left alone.
        assert [_ask(client) for _ in range(3)] == [("dear", 2), ("dear", 2), ("dear", 1)]
        marks = proxy.call(lambda r: r.ledger.exhausted())
        assert set(marks) == {"voucher:cheap-tokens", "cash:cheap"}
        assert "insufficient_quota" in marks["cash:cheap"]["reason"]
        assert proxy.call(lambda r: r.ledger.balances())["cheap-tokens"] == 0
        assert proxy.call(lambda r: r.ledger.balance("cheap-tokens")) == 10000  # nothing was drawn
        assert _stats(proxy)["cheap"]["cash_exhausted"] is True
        assert _sim_stats(proxy, "cheap")["status_402"] == 2
        assert_ledger_exact(proxy)
    # The marks outlive a restart; clearing one (after a top-up) brings the region back.
    with running_proxy(config) as proxy:
        client = _client(proxy)
        assert _ask(client) == ("dear", 1)
        proxy.call(lambda r: r.clear_exhausted(region="cheap"))
        proxy.call(lambda r: r.clear_exhausted(voucher_id="cheap-tokens"))
        raw = client.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=4
        )
        assert raw.headers["x-suanli-voucher"] == "cheap-tokens"
        assert_ledger_exact(proxy)


def test_probes_eject_a_dead_region_before_any_request_meets_it(tmp_path: Path):
    down = _down_region()
    health = {"probes": {"enabled": True, "interval_s": 0.05, "jitter": 0.5},
              "ejection": {"consecutive_gateway_failures": 2}}
    config = small_config(tmp_path, regions=[down, _region("up", 2.0)], vouchers=[], health=health)
    with running_proxy(config) as proxy:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _stats(proxy)["down"]["state"] != "ejected":
            time.sleep(0.05)
        assert _stats(proxy)["down"]["state"] == "ejected"
        assert _stats(proxy)["up"]["probe_ms"]["p50"] is not None
        assert _ask(_client(proxy)) == ("up", 1)
        assert_ledger_exact(proxy)


def test_an_idle_stream_is_cut_with_an_error_event_and_settled(tmp_path: Path):
    idle = _region("idle", 1.0, timeouts={"connect_s": 1, "first_byte_s": 1, "idle_s": 0.2},
                   sim={"ms_per_token": 600})
    config = _config(tmp_path, [idle])
    with running_proxy(config, sim_latency_scale=1.0) as proxy:
        stream = _client(proxy).chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=10, stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            list(stream)
        assert "idle" in caught.value.message
        (row,) = proxy.call(lambda r: r.ledger.usage())
        assert row.status == 502
        assert_ledger_exact(proxy)
