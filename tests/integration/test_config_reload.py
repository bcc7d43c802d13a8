"""Config reload (``POST /admin/reload`` and SIGHUP) and outages: the live shocks the planner reacts to.

A reload re-reads the config file: prices, regions, vouchers and limits apply to requests
that start after it, requests in flight finish, a bad config is refused and the old one kept,
and the planner re-plans at once. A region health ejects is planned without at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from suanli.config import load_config
from suanli.router.ops.cli import main
from tests.backends import read
from tests.harness import running_proxy, small_config
from tests.integration.test_keys import MASTER, MESSAGES, admin

GUIYANG = {"id": "guiyang", "zone": "west", "provider": "sim", "rtt_ms": {"east": 30, "west": 10},
           "ttft_ms": 60, "capabilities": ["chat", "completions"],
           "models": [{"name": "deepseek-flash", "price": {"input": 1.0, "output": 4.0}}]}
GUIYANG_CREDIT = {"id": "guiyang-credit", "region": "guiyang", "kind": "credit", "amount": 5.0,
                  "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}


def _data(tmp_path: Path, **overrides: Any) -> dict:
    config = small_config(tmp_path, health={"probes": {"enabled": False}}, **overrides)
    return json.loads(config.model_dump_json(exclude_none=True))


def _write(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def _proxy(path: Path, **options: Any):
    source = lambda: load_config(path)  # noqa: E731
    return running_proxy(source(), master_key=MASTER, config_source=source, **options)


def _wait_for_plan(proxy, reason: str, after: int) -> dict:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        info = proxy.router.plan_info()
        if info["plans"] > after and info["reason"] == reason:
            return info
        time.sleep(0.05)
    raise AssertionError(f"no {reason} re-plan after plan {after}: {proxy.router.plan_info()}")


def test_a_reload_applies_prices_regions_and_vouchers_and_re_plans(tmp_path: Path, ledger_opts: dict):
    path = tmp_path / "suanli.yaml"
    data = _data(tmp_path, planner={"replan_s": 3600}, **ledger_opts)
    _write(path, data)
    with _proxy(path) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        plans = _wait_for_plan(proxy, "start", 0)["plans"]
        data["regions"][1]["models"][0]["price"] = {"input": 18.0, "output": 72.0}  # wuhan x10
        data["regions"] = [r for r in data["regions"] if r["id"] != "qingyang"] + [GUIYANG]
        data["vouchers"].append(GUIYANG_CREDIT)
        _write(path, data)
        status, changes = admin(proxy, "POST", "/admin/reload")
        assert status == 200, changes
        assert changes["changed"] is True
        assert changes["regions_added"] == ["guiyang"] and changes["regions_removed"] == ["qingyang"]
        assert changes["regions_changed"] == {"wuhan": ["models.deepseek-flash.price"]}
        assert changes["vouchers_added"] == ["guiyang-credit"]
        assert _wait_for_plan(proxy, "config_reload", plans)["planned_at"]

        status, listing = admin(proxy, "GET", "/admin/vouchers")
        credit = next(v for v in listing["data"] if v["id"] == "guiyang-credit")
        assert credit["balance"] == pytest.approx(5.0)
        reply = client.chat.completions.with_raw_response.create(model="guiyang/deepseek-flash",
                                                                 messages=MESSAGES)
        assert reply.headers["x-suanli-region"] == "guiyang"
        assert reply.headers["x-suanli-voucher"] == "guiyang-credit"
        ids = {m.id for m in client.models.list().data}
        assert "guiyang/deepseek-flash" in ids and "qingyang/deepseek-flash" not in ids
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="qingyang/deepseek-flash", messages=MESSAGES)
        # The new price is what a request at wuhan now costs (its voucher cut away first).
        admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust", {"amount": -1e9, "reason": "test"})
        reply = client.chat.completions.with_raw_response.create(model="wuhan/deepseek-flash",
                                                                 messages=MESSAGES)
        usage = reply.parse().usage
        expected = (usage.prompt_tokens * 18.0 + usage.completion_tokens * 72.0) / 1e6
        assert float(reply.headers["x-suanli-cost-yuan"]) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_a_bad_config_is_refused_and_the_old_one_kept(tmp_path: Path):
    path = tmp_path / "suanli.yaml"
    data = _data(tmp_path)
    _write(path, data)
    with _proxy(path) as proxy:
        bad = json.loads(json.dumps(data))
        bad["regions"][0]["models"][0]["price"]["input"] = -1
        _write(path, bad)
        status, answer = admin(proxy, "POST", "/admin/reload")
        assert status == 400 and answer["error"]["code"] == "invalid_config"
        assert "regions[0].models[0].price.input" in answer["error"]["message"]

        moved = {**data, "ledger": {"url": f"sqlite:///{tmp_path / 'other.db'}"}}
        _write(path, moved)
        status, answer = admin(proxy, "POST", "/admin/reload")
        assert status == 400 and "ledger" in answer["error"]["message"]

        path.write_text("regions: [\n", encoding="utf-8")
        status, answer = admin(proxy, "POST", "/admin/reload")
        assert status == 400 and answer["error"]["code"] == "invalid_config"

        assert proxy.router.config.regions[0].models[0].price.input == 2.0  # the old config stands
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        assert client.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices
        status, _ = admin(proxy, "POST", "/admin/reload", key=None)
        assert status == 401


def test_a_reload_under_concurrent_traffic_drops_no_request(tmp_path: Path, ledger_opts: dict):
    path = tmp_path / "suanli.yaml"
    base = _data(tmp_path, **ledger_opts)
    other = json.loads(json.dumps(base))
    other["regions"][1]["models"][0]["price"] = {"input": 3.0, "output": 12.0}
    other["regions"].append(GUIYANG)
    other["vouchers"] = [v for v in other["vouchers"] if v["id"] != "wuhan-tokens"] + [GUIYANG_CREDIT]
    other["regions"][2]["limits"] = {"rpm": 1000}
    _write(path, base)
    failures: list[BaseException] = []
    served: list[str] = []
    stop = threading.Event()
    # Sims that take real time: requests are in flight while the config changes under them.
    with _proxy(path, sim_latency_scale=0.3) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0, timeout=60)

        def traffic(n: int) -> None:
            while not stop.is_set():
                try:
                    if n % 2:
                        stream = client.chat.completions.create(model="deepseek-flash", messages=MESSAGES,
                                                                stream=True, max_tokens=30)
                        chunks = list(stream)
                        assert chunks
                    else:
                        reply = client.chat.completions.with_raw_response.create(
                            model="deepseek-flash", messages=MESSAGES, max_tokens=30,
                            extra_headers={"X-Suanli-Class": "batch" if n % 4 == 0 else "interactive"})
                        served.append(reply.headers["x-suanli-region"])
                except BaseException as exc:  # noqa: BLE001 - counted below
                    failures.append(exc)

        threads = [threading.Thread(target=traffic, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for turn in range(6):
            time.sleep(0.3)
            _write(path, other if turn % 2 == 0 else base)
            status, answer = admin(proxy, "POST", "/admin/reload")
            assert status == 200, answer
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not failures, failures[:3]
        assert len(served) > 6
        give_up = time.monotonic() + 30
        while read(proxy, lambda r: r.ledger.pending_holds()) and time.monotonic() < give_up:
            time.sleep(0.05)
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
    if not ledger_opts:
        assert main(["audit", "verify", "--config", str(path)]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _said(server: subprocess.Popen) -> str:
    """The server's next line of its own (``suanli: ...``), past log lines."""
    while True:
        line = server.stdout.readline()  # type: ignore[union-attr]
        if not line or line.startswith("suanli: "):
            return line


def test_sighup_reloads_a_running_server(tmp_path: Path):
    path = tmp_path / "suanli.yaml"
    data = _data(tmp_path)
    _write(path, data)
    port = _free_port()
    env = {**os.environ, "SUANLI_MASTER_KEY": MASTER}
    command = [sys.executable, "-m", "suanli", "serve", "--config", str(path), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert "suanli serving on" in server.stdout.readline()  # type: ignore[union-attr]
        data["vouchers"].append({**GUIYANG_CREDIT, "region": "wuhan", "id": "wuhan-credit"})
        _write(path, data)
        server.send_signal(signal.SIGHUP)
        line = _said(server)
        assert "config reloaded" in line and "wuhan-credit" in line
        listing = httpx.get(f"http://127.0.0.1:{port}/admin/vouchers",
                            headers={"Authorization": f"Bearer {MASTER}"}).json()
        assert "wuhan-credit" in {v["id"] for v in listing["data"]}
        path.write_text("regions: []\n", encoding="utf-8")
        server.send_signal(signal.SIGHUP)
        assert "reload refused" in _said(server)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


def test_an_outage_health_sees_re_plans_at_once(tmp_path: Path):
    path = tmp_path / "suanli.yaml"
    _write(path, _data(tmp_path, planner={"replan_s": 3600}))
    with _proxy(path) as proxy:
        plans = _wait_for_plan(proxy, "start", 0)["plans"]
        sim = proxy.call(lambda r: r.base_url("wuhan")).removesuffix("/v1")
        httpx.post(f"{sim}/sim/faults", json={"error_rate": 1.0, "error_status": 503}).raise_for_status()
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        for _ in range(5):  # health.ejection.consecutive_5xx
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES)
        info = _wait_for_plan(proxy, "health", plans)
        assert info["blocked"] == ["wuhan"]
