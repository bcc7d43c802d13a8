"""``suanli vouchers set-balance`` and ``suanli reconcile`` as typed, locally and against a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import yaml

from suanli.config import load_config
from tests.harness import running_proxy, small_config

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "suanli"]
MASTER = "sk-master-reconcile-cli"


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SUANLI_MASTER_KEY"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_set_balance_then_reconcile_locally_and_through_a_server(tmp_path: Path):
    data = small_config(tmp_path, vouchers=[]).model_dump(mode="json", exclude_none=True)
    data["regions"][1]["balance"] = {"api": "manual"}  # wuhan: figures typed from its console
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))

    typed = _run([*CLI, "vouchers", "set-balance", "wuhan", "--cash-yuan", "300", "--note", "console",
                  "--config", str(path)])
    assert typed.returncode == 0, typed.stderr
    assert "wuhan: cash_yuan = 300 recorded as a baseline" in typed.stdout
    unknown = _run([*CLI, "vouchers", "set-balance", "atlantis", "--cash-yuan", "1", "--config", str(path)])
    assert unknown.returncode == 2
    assert _run([*CLI, "vouchers", "set-balance", "wuhan", "--config", str(path)]).returncode == 2

    with running_proxy(load_config(path), master_key=MASTER) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(
                model="wuhan/deepseek-flash", messages=[{"role": "user", "content": "hi"}], max_tokens=30
            )
        spent = sum(r.cash_yuan for r in proxy.call(lambda r: r.ledger.usage()))
        root = proxy.base_url.removesuffix("/v1")
        sent = _run([*CLI, "vouchers", "set-balance", "wuhan", "--cash-yuan", str(300 - spent),
                     "--url", root, "--key", MASTER])
        assert sent.returncode == 0, sent.stderr
        assert "recorded as a reading" in sent.stdout
        remote = _run([*CLI, "reconcile", "--url", root, "--key", MASTER, "--json"])
        assert remote.returncode == 0, remote.stderr
        (wuhan,) = json.loads(remote.stdout)
        assert wuhan["state"] == "ok" and abs(wuhan["units"]["cash_yuan"]["drift"]) < 1e-6

    # Offline, from the ledger file alone: a reading well off the ledger's count is drift (exit 3).
    _run([*CLI, "vouchers", "set-balance", "wuhan", "--cash-yuan", "250", "--config", str(path)])
    local = _run([*CLI, "reconcile", "--config", str(path)])
    assert local.returncode == 3, local.stderr
    assert "drift" in local.stdout and "wuhan" in local.stdout
