"""A 402 marks a voucher or a region's cash exhausted, and the mark heals: an admin clear over
HTTP, ``suanli vouchers clear`` (over HTTP or on the ledger), and the periodic re-check; the
status and the monitor say why a region is out."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.harness import running_proxy
from tests.integration.test_faults import FAR, MESSAGES, _ask, _config, _faults, _region

pytestmark = pytest.mark.timeout(90)

MASTER = "sk-master-test"
AUTH = {"Authorization": f"Bearer {MASTER}"}
VOUCHERS = [{"id": "cheap-tokens", "region": "cheap", "kind": "tokens", "amount": 10000, **FAR}]


def _client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0, timeout=30)


def _exhaust(proxy, client) -> None:
    _faults(proxy, "cheap", error_rate=1.0, error_status=402)
    assert [_ask(client)[0] for _ in range(3)] == ["dear", "dear", "dear"]  # the client never sees the 402
    _faults(proxy, "cheap")  # the operator tops up at the platform


def _admin(proxy) -> str:
    return proxy.base_url.removesuffix("/v1")


def test_an_admin_clear_over_http_brings_the_region_back_and_status_says_why(tmp_path: Path) -> None:
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], vouchers=VOUCHERS,
                     health={"exhausted": {"recheck_s": 0}})
    with running_proxy(config, master_key=MASTER) as proxy:
        client = _client(proxy)
        _exhaust(proxy, client)
        marks = httpx.get(f"{_admin(proxy)}/admin/exhausted", headers=AUTH).json()["data"]
        assert {m["account"] for m in marks} == {"voucher:cheap-tokens", "cash:cheap"}
        assert all(m["region"] == "cheap" and "insufficient_quota" in m["reason"] for m in marks)
        assert all(m["recheck_at"] is None for m in marks)  # recheck_s 0: only a clear brings it back
        status = httpx.get(f"{_admin(proxy)}/admin/status", headers=AUTH).json()
        cheap = next(r for r in status["regions"] if r["id"] == "cheap")
        assert cheap["health"]["cash_exhausted"] is True
        assert "insufficient_quota" in cheap["health"]["exhausted"]["reason"]
        kinds = {a["kind"]: a["message"] for a in status["alerts"]}
        assert "insufficient_quota" in kinds["cash_exhausted"]
        assert "cheap-tokens" in kinds["voucher_exhausted"]
        assert _ask(client)[0] == "dear"  # still out until cleared

        unknown = httpx.post(f"{_admin(proxy)}/admin/regions/atlantis/clear", headers=AUTH)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        cleared = httpx.post(f"{_admin(proxy)}/admin/regions/cheap/clear", headers=AUTH).json()
        assert sorted(cleared["cleared"]) == ["cash:cheap", "voucher:cheap-tokens"]
        raw = client.chat.completions.with_raw_response.create(model="deepseek-flash", messages=MESSAGES,
                                                               max_tokens=4)
        assert raw.headers["x-suanli-region"] == "cheap" and raw.headers["x-suanli-voucher"] == "cheap-tokens"
        assert httpx.get(f"{_admin(proxy)}/admin/exhausted", headers=AUTH).json()["data"] == []
        status = httpx.get(f"{_admin(proxy)}/admin/status", headers=AUTH).json()
        assert next(r for r in status["regions"] if r["id"] == "cheap")["health"]["exhausted"] is None


def test_a_mark_is_rechecked_after_its_interval(tmp_path: Path) -> None:
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], vouchers=VOUCHERS,
                     health={"exhausted": {"recheck_s": 1.0, "check_s": 0.1}})
    with running_proxy(config, master_key=MASTER) as proxy:
        client = _client(proxy)
        _faults(proxy, "cheap", error_rate=1.0, error_status=402)
        assert [_ask(client)[0] for _ in range(3)] == ["dear", "dear", "dear"]
        marks = httpx.get(f"{_admin(proxy)}/admin/exhausted", headers=AUTH).json()["data"]
        assert len(marks) == 2 and all(m["recheck_at"] for m in marks)
        time.sleep(1.5)  # half-open: cheap is tried again, answers 402 again, and is marked anew
        assert _ask(client)[0] == "dear"
        assert len(httpx.get(f"{_admin(proxy)}/admin/exhausted", headers=AUTH).json()["data"]) >= 1
        _faults(proxy, "cheap")  # the platform has money again
        deadline = time.monotonic() + 10
        served = []
        while time.monotonic() < deadline and (not served or served[-1] != "cheap"):
            time.sleep(0.2)
            served.append(_ask(client)[0])
        assert served[-1] == "cheap"  # back without anyone clearing it
        assert proxy.call(lambda r: r.exhaustion.rechecks) >= 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suanli", "vouchers", *args], capture_output=True, text=True,
                          timeout=60)


def test_suanli_vouchers_clear_over_http_and_on_the_ledger(tmp_path: Path) -> None:
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], vouchers=VOUCHERS,
                     health={"exhausted": {"recheck_s": 0}})
    with running_proxy(config, master_key=MASTER) as proxy:
        client = _client(proxy)
        _exhaust(proxy, client)
        done = _cli("clear", "cheap-tokens", "--url", _admin(proxy), "--key", MASTER)
        assert done.returncode == 0, done.stderr
        assert "voucher:cheap-tokens" in done.stdout
        left = httpx.get(f"{_admin(proxy)}/admin/exhausted", headers=AUTH).json()["data"]
        assert [m["account"] for m in left] == ["cash:cheap"]
        assert _cli("clear", "atlantis", "--url", _admin(proxy), "--key", MASTER).returncode == 1
    # The server stopped: the cash mark is cleared in the ledger itself, and holds after a restart.
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), allow_unicode=True))
    done = _cli("clear", "cheap", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "cash:cheap" in done.stdout
    with running_proxy(config, master_key=MASTER) as proxy:
        assert httpx.get(f"{_admin(proxy)}/admin/exhausted", headers=AUTH).json()["data"] == []
        assert _ask(_client(proxy))[0] == "cheap"
