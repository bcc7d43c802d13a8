"""A request the upstream got and never answered is in doubt: recorded at its hold, never run twice blindly.

Through the real stack: a slow sim region that stalls past its first-byte timeout, a faster one
behind it, a key with a budget, and the operator's ``suanli report`` and ``suanli audit verify``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from suanli.router.ledger.types import IN_DOUBT_STATUS
from suanli.router.ops.cli import main
from tests.backends import read
from tests.integration.test_faults import _config, _faults, _region, _sim_stats
from tests.integration.test_keys import MASTER, MESSAGES, admin, new_key

TIMEOUTS = {"connect_s": 0.5, "first_byte_s": 0.3, "idle_s": 1, "whole_answer_tokens_per_s": 2000}


def _stack(tmp_path: Path, ledger_opts: dict):
    slow = _region("slow", 1.0, timeouts=TIMEOUTS)
    config = _config(tmp_path, [slow, _region("fast", 2.0)])
    if ledger_opts:
        config = config.model_copy(update={"ledger": config.ledger.model_copy(update=ledger_opts["ledger"])})
    return config


def _cli_config(tmp_path: Path, ledger_url: str) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({
        "ledger": {"url": ledger_url},
        "regions": [{"id": "slow", "zone": "east", "provider": "sim",
                     "models": [{"name": "deepseek-flash", "price": {"input": 1.0, "output": 4.0}}]}],
    }))
    return path


def _post(proxy, key: str, **extra) -> httpx.Response:
    body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 200, "n": 2, **extra}
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def test_a_whole_answer_that_never_comes_is_in_doubt_not_retried_and_counted(
    tmp_path: Path, ledger_opts: dict, capsys: pytest.CaptureFixture
):
    from tests.harness import running_proxy

    config = _stack(tmp_path, ledger_opts)
    with running_proxy(config, master_key=MASTER, sim_latency_scale=1.0) as proxy:
        made = new_key(proxy, budget_yuan_per_day=1.0)
        _faults(proxy, "slow", stall_ms=1500)
        answer = _post(proxy, made["key"])
        assert answer.status_code == 504
        error = answer.json()["error"]
        assert error["code"] == "upstream_in_doubt" and error["type"] == "server_error"
        assert answer.headers["x-should-retry"] == "false"  # the SDK must not run it a third time
        # Sent once, to the slow region only: the fast one never ran a second generation.
        assert _sim_stats(proxy, "slow")["requests"] == 1
        assert _sim_stats(proxy, "fast").get("requests", 0) == 0
        (row,) = read(proxy, lambda r: r.ledger.usage())
        assert row.status == IN_DOUBT_STATUS and row.region == "slow" and row.key_id == made["id"]
        assert row.completion_tokens == 2 * 200  # the hold's bound: n x max_tokens
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
        shown = admin(proxy, "GET", f"/admin/keys/{made['id']}")[1]
        assert shown["spent_yuan_today"] == pytest.approx(row.cost_yuan) and row.cost_yuan > 0
        # A stream may still fail over (closing it stops the generation), but the abandoned
        # attempt is in doubt too.
        streamed = _post(proxy, made["key"], stream=True)
        assert streamed.status_code == 200 and streamed.headers["x-suanli-region"] == "fast"
        assert "[DONE]" in streamed.text
        rows = read(proxy, lambda r: r.ledger.usage())
        assert [(r.region, r.status) for r in rows] == [("slow", 504), ("slow", 504), ("fast", 200)]
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
        url = proxy.config.ledger.url
    cli = _cli_config(tmp_path, url)
    capsys.readouterr()
    assert main(["report", "--config", str(cli), "--since", "1d", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [entry["region"] for entry in report["in_doubt"]] == ["slow", "slow"]
    assert report["totals"]["requests"] == 3
    assert main(["report", "--config", str(cli), "--since", "1d", "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\nin_doubt,") == 2
    assert main(["report", "--config", str(cli), "--since", "1d"]) == 0
    assert "in doubt" in capsys.readouterr().out
    assert main(["audit", "verify", "--config", str(cli), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["ok"] and audit["in_doubt"] == [rows[0].id, rows[1].id]
    assert main(["audit", "verify", "--config", str(cli)]) == 0
    assert "2 row(s) in doubt" in capsys.readouterr().out


def test_a_connect_error_before_sending_still_fails_over(tmp_path: Path):
    from tests.harness import running_proxy
    from tests.integration.test_faults import _down_region

    config = _config(tmp_path, [_down_region(), _region("up", 2.0)])
    with running_proxy(config) as proxy:
        answer = _post(proxy, "x")
        assert answer.status_code == 200 and answer.headers["x-suanli-region"] == "up"
        (row,) = proxy.call(lambda r: r.ledger.usage())
        assert row.status == 200 and row.region == "up"


async def test_an_sdk_caller_that_gives_up_while_the_upstream_has_it_leaves_an_in_doubt_row(tmp_path: Path):
    import asyncio

    import httpx as client_http

    from suanli.router.core.router import Router

    slow = _region("slow", 1.0, timeouts={"connect_s": 1, "first_byte_s": 30, "idle_s": 30})
    config = _config(tmp_path, [slow])
    async with Router(config, sim_latency_scale=1.0) as router:
        url = router.base_url("slow").removesuffix("/v1")
        async with client_http.AsyncClient() as http:
            (await http.post(f"{url}/sim/faults", json={"stall_ms": 3000})).raise_for_status()
        call = router.chat_completions(model="deepseek-flash", messages=MESSAGES, max_tokens=50)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call, 0.5)
    # close() waited for the settlement behind the cancelled caller; the ledger file stays readable.
    async with Router(config) as router:
        (row,) = router.ledger.usage()
        assert row.status == IN_DOUBT_STATUS and row.completion_tokens == 50
        assert router.ledger.pending_holds() == 0
