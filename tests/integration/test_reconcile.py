"""Reconciliation against the sims' own balance endpoints: no drift after real traffic, a 5% drift
flagged within one interval, a failing balance endpoint shown as unknown (never 0) while the
region keeps serving, manual figures, and the figures in /admin/status and /metrics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai

from tests.backends import read
from tests.harness import running_proxy, small_config

MASTER = "sk-master-reconcile-test"
MESSAGES = [{"role": "user", "content": "西部的算力为什么比东部便宜？"}]
INTERVAL_S = 0.5


def call(url: str, method: str = "GET", body: Any = None, key: str | None = MASTER) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def reconcile_config(tmp_path: Path, **overrides: Any):
    config = small_config(tmp_path)
    data = config.model_dump(mode="json", exclude_none=True, by_alias=True)
    balances = {
        "qingyang": ({"api": "deepseek"}, {"cash_yuan": 100.0}),
        "shanghai": ({"api": "moonshot"}, {"cash_yuan": 50.0}),  # and its credit voucher: granted yuan
        # wuhan's token voucher is the sim's token package: its tokens read from a configured field
        "wuhan": ({"api": "siliconflow", "fields": {"tokens": "data.tokens"}}, {"cash_yuan": 80.0}),
    }
    for region in data["regions"]:
        source, sim = balances[region["id"]]
        region["balance"] = source
        region["sim"] = {**region.get("sim", {}), "balance": sim}
    data["reconcile"] = {"interval_s": INTERVAL_S, "drift_share": 0.02}
    data.update(overrides)
    from suanli.config import load_config

    return load_config(data)


def checks(proxy) -> dict[str, dict]:
    status, doc = call(f"http://127.0.0.1:{proxy.port}/admin/status")
    assert status == 200
    return {c["region"]: c for c in doc["reconcile"]}


def test_traffic_reconciles_drift_is_flagged_and_a_failed_query_is_unknown(tmp_path: Path):
    with running_proxy(reconcile_config(tmp_path), master_key=MASTER) as proxy:
        root = f"http://127.0.0.1:{proxy.port}"
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        # The first pass (at start) records each unit's baseline from the platform itself.
        deadline = time.monotonic() + 10
        while any(c["state"] != "baseline" for c in checks(proxy).values()):
            assert time.monotonic() < deadline, checks(proxy)
            time.sleep(0.05)
        for i in range(30):
            model = ("qingyang/deepseek-flash", "shanghai/deepseek-flash", "wuhan/deepseek-flash")[i % 3]
            client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5 + i,
                                           extra_headers={"X-Suanli-Class": "batch"})
            client.embeddings.create(model="text-embedding-v4", input=["算力"] * (1 + i % 3))
        status, body = call(f"{root}/admin/reconcile", "POST")
        assert status == 200
        found = {c["region"]: c for c in body["data"]}
        for region, check in found.items():
            assert check["state"] == "ok", (region, check)
            for unit in check["units"].values():
                assert abs(unit["drift"]) < 1e-4, (region, unit)
        # Units kept apart: wuhan's token package and shanghai's granted yuan moved, not their cash only.
        assert found["wuhan"]["units"]["tokens"]["platform"] < 100000
        assert found["shanghai"]["units"]["granted_yuan"]["platform"] < 0.5
        assert found["qingyang"]["units"]["cash_yuan"]["platform"] < 100.0

        # Told to drift by 5%: flagged within one interval, by the background task alone.
        qingyang = proxy.call(lambda r: r.base_url("qingyang")).removesuffix("/v1")
        assert call(f"{qingyang}/sim/faults", "POST", {"balance": {"drift": 0.05}}, key=None)[0] == 200
        told = time.monotonic()
        while checks(proxy)["qingyang"]["state"] != "drift":
            assert time.monotonic() - told < INTERVAL_S + 1.0, checks(proxy)["qingyang"]
            time.sleep(0.02)
        flagged_after_s = time.monotonic() - told
        cash = checks(proxy)["qingyang"]["units"]["cash_yuan"]
        assert cash["flagged"] and abs(cash["drift_share"] - 0.05) < 0.001
        status, doc = call(f"{root}/admin/status")
        assert any(a["kind"] == "reconcile_drift" and a["subject"] == "qingyang" for a in doc["alerts"])
        print(f"5% drift flagged after {flagged_after_s:.2f} s (interval {INTERVAL_S} s)")

        # A balance endpoint that fails: unknown, never 0, and the region keeps serving.
        shanghai = proxy.call(lambda r: r.base_url("shanghai")).removesuffix("/v1")
        call(f"{shanghai}/sim/faults", "POST", {"balance": {"fail": True}}, key=None)
        call(f"{root}/admin/reconcile", "POST")
        check = checks(proxy)["shanghai"]
        assert check["state"] == "unknown" and "500" in check["error"]
        assert all(u["platform"] is None for u in check["units"].values())
        raw = client.chat.completions.with_raw_response.create(
            model="shanghai/deepseek-flash", messages=MESSAGES, max_tokens=3
        )
        assert raw.headers["x-suanli-region"] == "shanghai"
        status, metrics = call(f"{root}/metrics")
        assert 'suanli_balance_known{region="shanghai"} 0.0' in metrics
        assert 'suanli_balance_platform{region="shanghai"' not in metrics
        assert 'suanli_balance_known{region="qingyang"} 1.0' in metrics
        assert 'suanli_balance_drift_flagged{region="qingyang"} 1.0' in metrics
        # The monitor shows each region's balances; shanghai's as unknown.
        from rich.console import Console

        from suanli.router.ops.monitor_view import render_status

        console = Console(width=200, record=True)
        console.print(render_status(call(f"{root}/admin/status")[1], width=200, height=80))
        screen = console.export_text()
        assert "balances: platform against ledger" in screen
        assert any("shanghai" in line and "unknown" in line for line in screen.splitlines())
        assert any("qingyang" in line and "drift" in line for line in screen.splitlines())


def test_manual_figures_set_a_baseline_then_show_drift(tmp_path: Path, ledger_opts: dict):
    config = small_config(tmp_path, vouchers=[], **ledger_opts)
    data = config.model_dump(mode="json", exclude_none=True, by_alias=True)
    data["regions"][1]["balance"] = {"api": "manual"}  # wuhan
    from suanli.config import load_config

    with running_proxy(load_config(data), master_key=MASTER) as proxy:
        root = f"http://127.0.0.1:{proxy.port}"
        balance = f"{root}/admin/regions/wuhan/balance"
        status, body = call(balance, "POST", {"cash_yuan": 200.0, "note": "console"})
        assert status == 201
        assert body["recorded"] == [{"unit": "cash_yuan", "amount": 200.0, "baseline": True}]
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        for _ in range(5):
            client.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=20)
        spent = sum(r.cash_yuan for r in read(proxy, lambda r: r.ledger.usage()))
        assert spent > 0
        status, body = call(f"{root}/admin/regions/wuhan/balance", "POST", {"cash_yuan": 200.0 - spent})
        assert body["check"]["state"] == "ok" and abs(body["check"]["units"]["cash_yuan"]["drift"]) < 1e-9
        status, body = call(f"{root}/admin/regions/wuhan/balance", "POST", {"cash_yuan": 150.0})
        assert body["check"]["state"] == "drift"
        assert call(f"{root}/admin/regions/atlantis/balance", "POST", {"cash_yuan": 1})[0] == 404
        assert call(f"{root}/admin/regions/wuhan/balance", "POST", {"cash": 1})[0] == 400
        assert call(f"{root}/admin/regions/wuhan/balance", "POST", {"cash_yuan": -1})[0] == 400
        assert call(f"{root}/admin/regions/wuhan/balance", "POST", {"cash_yuan": 1}, key=None)[0] == 401
