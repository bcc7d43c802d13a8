"""Alerts reach a loopback webhook: budget thresholds, a region out of cash, reconciliation drift;
retried with backoff when the receiver fails; a hanging receiver never slows a request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai

from suanli.config import load_config
from tests.harness import running_proxy, small_config
from tests.integration.test_reconcile import call as _call

MASTER = "sk-master-alerts-test"
MESSAGES = [{"role": "user", "content": "西部的算力为什么比东部便宜？"}]


def call(url: str, method: str = "GET", body: Any = None, key: str | None = MASTER) -> tuple[int, Any]:
    return _call(url, method, body, key=key)


class Receiver:
    """A webhook on loopback: records each JSON body; fails the first ``fail_first`` posts, or hangs."""

    def __init__(self, *, fail_first: int = 0, hang_s: float = 0.0) -> None:
        self.bodies: list[dict] = []
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts += 1
                if hang_s:
                    time.sleep(hang_s)
                status = 500 if receiver.posts <= fail_first else 204
                if status == 204:
                    receiver.bodies.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[tuple[str, str]]:
        return [(b["kind"], b["state"]) for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _config(tmp_path: Path, webhook: str, **alerts: Any):
    data = small_config(tmp_path, vouchers=[]).model_dump(mode="json", exclude_none=True, by_alias=True)
    data["alerts"] = {"webhook_url": webhook, "check_s": 0.1, "backoff_s": 0.05, "retries": 4, **alerts}
    data["reconcile"] = {"interval_s": 0.2}
    data["regions"][0]["balance"] = {"api": "deepseek"}  # shanghai
    return load_config(data)


def _wait(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_budget_region_out_and_drift_alerts_reach_the_webhook(tmp_path: Path):
    receiver = Receiver(fail_first=2)
    try:
        with running_proxy(_config(tmp_path, receiver.url), master_key=MASTER) as proxy:
            root = f"http://127.0.0.1:{proxy.port}"
            master = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
            probe = master.chat.completions.create(
                model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=8
            )
            per_request = probe.usage.model_extra["cost_yuan"]
            spec = {"name": "team-a", "budget_yuan_per_day": round(per_request * 2.4, 9)}
            status, key = call(f"{root}/admin/keys", "POST", spec)
            assert status == 201, key
            # The hold is the upper bound: max_tokens 8 holds what 8 output tokens cost.
            team = openai.OpenAI(base_url=proxy.base_url, api_key=key["key"], max_retries=0)
            team.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=8)
            _wait(lambda: proxy.call(lambda r: len(r.ledger.usage())) == 2)
            time.sleep(0.3)  # 42%: no alert yet
            assert not receiver.posts
            team.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=8)
            _wait(lambda: {("budget_50", "firing"), ("budget_80", "firing")} <= set(receiver.kinds()))
            assert ("budget_100", "firing") not in receiver.kinds()
            # The first two posts failed with 500: the alert got through on its third attempt.
            status, alerts = call(f"{root}/admin/alerts")
            first = [a for a in alerts["recent"] if a["delivery"] == "delivered"][-1]  # the oldest
            assert first["attempts"] == 3
            assert all(b["object"] == "suanli.alert" and b["subject"] == f"{key['id']}:day"
                       for b in receiver.bodies if b["kind"].startswith("budget_"))

            # A region out of cash upstream (402): alerted.
            qingyang = proxy.call(lambda r: r.base_url("qingyang")).removesuffix("/v1")
            call(f"{qingyang}/sim/faults", "POST", {"error_rate": 1.0, "error_status": 402}, key=None)
            try:
                master.chat.completions.create(
                    model="qingyang/deepseek-flash", messages=MESSAGES, max_tokens=3,
                    extra_headers={"X-Suanli-Class": "batch"},
                )
            except openai.APIStatusError:
                pass
            _wait(lambda: ("cash_exhausted", "firing") in receiver.kinds())

            # Reconciliation drift at shanghai: alerted, and resolved when the drift is gone.
            shanghai = proxy.call(lambda r: r.base_url("shanghai")).removesuffix("/v1")
            call(f"{shanghai}/sim/faults", "POST", {"balance": {"drift": 0.05}}, key=None)
            _wait(lambda: ("reconcile_drift", "firing") in receiver.kinds())
            call(f"{shanghai}/sim/faults", "POST", {"balance": {"drift": 0.0}}, key=None)
            _wait(lambda: ("reconcile_drift", "resolved") in receiver.kinds())

            status, doc = call(f"{root}/admin/status")
            assert any(a["kind"] == "reconcile_drift" for a in doc["alerts_sent"]["recent"])
            status, metrics = call(f"{root}/metrics")
            assert 'suanli_alerts_total{kind="budget_80",outcome="delivered"} 1.0' in metrics
            assert 'suanli_alerts_total{kind="reconcile_drift",outcome="firing"} 1.0' in metrics
    finally:
        receiver.close()


def test_a_hanging_webhook_never_slows_a_request(tmp_path: Path):
    receiver = Receiver(hang_s=3.0)
    try:
        config = _config(tmp_path, receiver.url, timeout_s=0.3, retries=1, voucher_expiry_days=10000)
        with running_proxy(config, master_key=MASTER) as proxy:
            root = f"http://127.0.0.1:{proxy.port}"
            client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
            shanghai = proxy.call(lambda r: r.base_url("shanghai")).removesuffix("/v1")
            call(f"{shanghai}/sim/faults", "POST", {"balance": {"drift": 0.05}}, key=None)
            _wait(lambda: receiver.posts >= 1)
            started = time.perf_counter()
            for _ in range(20):
                client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=3)
            assert time.perf_counter() - started < 2.0  # twenty requests while the webhook hangs
            _wait(lambda: any(str(a.get("delivery", "")).startswith("failed")
                              for a in call(f"{root}/admin/alerts")[1]["recent"]))
    finally:
        receiver.close()
