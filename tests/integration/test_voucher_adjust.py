"""Operators' voucher adjustments: ``POST /admin/vouchers/{id}/adjust`` and ``suanli vouchers adjust``.

A top-up raises the balance, a cut takes what is free (floored at 0), each a row of the usage
hash chain (``suanli audit verify`` stays OK), on SQLite and PostgreSQL; a cut racing holds
never lets the voucher be overspent; the planner re-plans at once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import openai
import pytest
import yaml

from suanli.router.ops.cli import main
from tests.backends import read, sql
from tests.harness import running_proxy, small_config
from tests.integration.test_keys import MASTER, MESSAGES, admin


def _voucher(proxy, voucher_id: str) -> dict:
    status, body = admin(proxy, "GET", "/admin/vouchers")
    assert status == 200, body
    return next(row for row in body["data"] if row["id"] == voucher_id)


def _settled_status(proxy, voucher_id: str) -> dict:
    """The voucher as the ledger has it once no hold is pending (PostgreSQL voids run behind)."""
    give_up = time.monotonic() + 30
    while True:
        status = next(v for v in read(proxy, lambda r: r.ledger.vouchers()) if v.id == voucher_id)
        if status.held == 0 or time.monotonic() > give_up:
            return {"balance": status.balance, "held": status.held}
        time.sleep(0.05)


def _wait_for_plan(proxy, reason: str, after: int) -> dict:
    """The plan info once a re-plan for ``reason`` followed plan number ``after`` (polled, 30 s at most)."""
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        info = proxy.router.plan_info()
        if info["plans"] > after and info["reason"] == reason:
            return info
        time.sleep(0.05)
    raise AssertionError(f"no re-plan after plan {after}: {proxy.router.plan_info()}")


def test_top_up_and_cut_move_the_balance_and_are_in_the_chain(tmp_path: Path, ledger_opts: dict, capsys):
    config = small_config(tmp_path, **ledger_opts)
    with running_proxy(config, master_key=MASTER) as proxy:
        status, up = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                           {"amount": 50000, "reason": "city top-up, ticket 17"})
        assert status == 200, up
        assert up["applied"] == pytest.approx(50000) and up["balance"] == pytest.approx(150000)
        assert _voucher(proxy, "wuhan-tokens")["balance"] == pytest.approx(150000)
        assert _voucher(proxy, "wuhan-tokens")["spent"] == pytest.approx(0)  # a top-up is not spend

        status, cut = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                            {"amount": -400000, "reason": "quota cut"})
        assert status == 200, cut
        assert cut["applied"] == pytest.approx(-150000)  # floored at 0
        assert cut["balance"] == pytest.approx(0) and cut["available"] == pytest.approx(0)
        assert read(proxy, lambda r: r.balances())["wuhan-tokens"] == pytest.approx(0)
        assert _voucher(proxy, "wuhan-tokens")["burn_per_hour"] == 0  # an adjustment is not spend

        # A request now pays cash: the voucher has nothing left.
        reply = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0).chat.completions \
            .with_raw_response.create(model="wuhan/deepseek-flash", messages=MESSAGES)
        assert reply.headers["x-suanli-voucher"] == "none"

        rows = read(proxy, lambda r: r.ledger.usage())
        adjustments = [row for row in rows if row.work_class == "adjustment"]
        assert [row.voucher_units for row in adjustments] == [pytest.approx(-50000), pytest.approx(150000)]
        assert all(row.cash_yuan == 0 and row.tokens == 0 for row in adjustments)
        reasons = sql(config.ledger.url, "SELECT reason FROM voucher_adjustments ORDER BY time")
        assert [r[0] for r in reasons] == ["city top-up, ticket 17", "quota cut"]

    path = tmp_path / "suanli.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json(exclude_none=True))))
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reason": "no amount"}, "amount"),
        ({"amount": 0, "reason": "zero"}, "amount"),
        ({"amount": "100", "reason": "a string"}, "amount"),
        ({"amount": True, "reason": "a bool"}, "amount"),
        ({"amount": 100}, "reason"),
        ({"amount": 100, "reason": "  "}, "reason"),
        ({"amount": 100, "reason": "x", "extra": 1}, "extra"),
    ],
)
def test_a_bad_adjustment_is_400_and_moves_nothing(tmp_path: Path, body: dict, param: str):
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:
        status, answer = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust", body)
        assert status == 400, answer
        assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"
        assert _voucher(proxy, "wuhan-tokens")["balance"] == pytest.approx(100000)


def test_an_unknown_voucher_is_404_and_the_master_key_is_needed(tmp_path: Path):
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:
        status, answer = admin(proxy, "POST", "/admin/vouchers/nope/adjust", {"amount": 1, "reason": "x"})
        assert status == 404 and answer["error"]["code"] == "not_found"
        status, answer = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                               {"amount": 1, "reason": "x"}, key=None)
        assert status == 401
        assert _voucher(proxy, "wuhan-tokens")["balance"] == pytest.approx(100000)


def test_an_adjustment_re_plans_at_once(tmp_path: Path):
    # The periodic re-plan is an hour away: a plan after the cut is the cut's.
    config = small_config(tmp_path, planner={"replan_s": 3600})
    with running_proxy(config, master_key=MASTER) as proxy:
        before = _wait_for_plan(proxy, "start", 0)["plans"]
        # 1% of the voucher: too little for the planner's own balance check; the adjustment pokes it.
        status, _ = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                          {"amount": -1000, "reason": "cut"})
        assert status == 200
        assert _wait_for_plan(proxy, "voucher_adjust", before)["planned_at"] is not None


def test_a_cut_racing_holds_never_overspends(tmp_path: Path, ledger_opts: dict):
    # A small token voucher, requests drawing on it from 8 threads while cuts and top-ups land.
    vouchers = [{"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 20000,
                 "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}]
    config = small_config(tmp_path, vouchers=vouchers, **ledger_opts)
    failures: list[BaseException] = []
    with running_proxy(config, master_key=MASTER) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)

        def traffic() -> None:
            try:
                for _ in range(12):
                    client.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES,
                                                   max_tokens=40)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=traffic) for _ in range(8)]
        for thread in threads:
            thread.start()
        moves = []
        for amount in (-3000, 2000, -50000, 4000, -2500, -50000):
            status, body = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                                 {"amount": amount, "reason": "race"})
            assert status == 200, body
            assert body["balance"] >= 0 and body["available"] >= -1e-9
            moves.append(body["applied"])
        for thread in threads:
            thread.join(120)
        assert not failures, failures[:3]
        status = _settled_status(proxy, "wuhan-tokens")
        rows = read(proxy, lambda r: r.ledger.usage())
    drawn = sum(row.voucher_units for row in rows if row.work_class != "adjustment" and row.voucher_id)
    assert status["balance"] >= 0 and status["held"] == pytest.approx(0)
    # Every unit is accounted for: the start, plus top-ups, less cuts, less what requests drew.
    assert 20000 + sum(moves) - drawn == pytest.approx(status["balance"], abs=1e-6)
    assert drawn <= 20000 + sum(m for m in moves if m > 0) + 1e-6


def test_the_cli_adjusts_through_a_server_and_in_the_ledger(tmp_path: Path, capsys, monkeypatch):
    config = small_config(tmp_path)
    path = tmp_path / "suanli.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json(exclude_none=True))))
    assert main(["vouchers", "adjust", "wuhan-tokens", "-1000", "--reason", "offline cut",
                 "--config", str(path)]) == 0
    assert "cut by 1000" in capsys.readouterr().out
    with running_proxy(config, master_key=MASTER) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        assert main(["vouchers", "adjust", "wuhan-tokens", "2500", "--reason", "top-up", "--url", url,
                     "--key", MASTER, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["balance"] == pytest.approx(101500)
        assert main(["vouchers", "adjust", "nope", "5", "--reason", "x", "--url", url, "--key", MASTER]) == 1
        assert "404" in capsys.readouterr().err
    assert main(["vouchers", "adjust", "nope", "5", "--reason", "x", "--config", str(path)]) == 1
    assert "unknown voucher" in capsys.readouterr().err
