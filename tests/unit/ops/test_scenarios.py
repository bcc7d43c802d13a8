"""The what-if scenarios: the default set sized on the team's traffic, a file's shorthands."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml

from suanli.router.ops.scenarios import Traffic, default_scenarios, load_scenarios
from suanli.router.simulate.trace import parse_trace
from tests.harness import small_config

START = datetime.fromisoformat("2026-12-01T00:00:00+08:00")


def traffic(**overrides: object) -> Traffic:
    data = {
        "start": START,
        "span_s": 86400.0,
        "offsets_s": [3600.0 * h for h in (1, 10, 11, 12, 13, 14, 20)],
        "regions": ["qingyang", "wuhan", "wuhan", "wuhan", "wuhan", "shanghai", "qingyang"],
        "cash": [0.5, 0.0, 0.0, 0.0, 0.0, 0.1, 0.5],
        "last_month_cash_yuan": 120.0,
    }
    return Traffic(**{**data, **overrides})


def test_the_default_set_is_sized_on_the_traffic(tmp_path) -> None:
    config = small_config(tmp_path)
    halved, down, spike, bonus = default_scenarios(config, traffic())
    assert {e["voucher"]: e["amount"] for e in halved.events} == {
        "wuhan-tokens": -50000,
        "shanghai-credit": -0.25,
    }
    # wuhan served the most; the first 6 hours holding all its requests (10:00-13:00) start at 08:00
    assert down.events == ({"t": 28800.0, "event": "region_down", "region": "wuhan", "until": 50400.0},)
    # east (shanghai, wuhan) x2 in 09-12 and 14-18 local
    windows = sorted({(e["t"], e["until"]) for e in spike.events})
    assert windows == [(32400.0, 43200.0), (50400.0, 64800.0)]
    assert {e["region"] for e in spike.events} == {"shanghai", "wuhan"}
    # 10% of last month's 120 yuan, as credit where the team pays the most cash
    (voucher,) = bonus.vouchers
    assert voucher.kind == "credit" and voucher.amount == pytest.approx(12.0) and voucher.region == "qingyang"
    for scenario in (halved, down, spike):  # every event is one the trace parser takes
        lines = ['{"trace": "suanli/v1", "start": "2026-12-01T00:00:00+08:00"}']
        parse_trace(lines + [json.dumps(e) for e in scenario.events], config)


def test_a_scenario_file_with_a_typo_or_an_unknown_region_is_refused(tmp_path) -> None:
    config = small_config(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"scenarios": [{"name": "x", "price_spike": {"zone": "east", "factr": 2}}]})
    )
    with pytest.raises(ValueError, match="factr"):
        load_scenarios(path, config, traffic())
    path.write_text(
        yaml.safe_dump({"scenarios": [{"name": "x", "region_down": {"region": "mars", "hours": 1}}]})
    )
    with pytest.raises(ValueError, match="mars"):
        load_scenarios(path, config, traffic())


def test_a_programme_scenario_adds_its_voucher(tmp_path) -> None:
    from suanli.config.programmes import load_programmes

    config = small_config(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"scenarios": [{"name": "apply to qingyang", "programme": "qingyang-compute"}]})
    )
    (scenario,) = load_scenarios(path, config, traffic(), load_programmes())
    (voucher,) = scenario.vouchers
    assert voucher.region == "qingyang" and voucher.kind == "discount" and voucher.rate == 0.3


def test_whatif_reports_per_key_and_per_priority_when_keys_carry_one(tmp_path) -> None:
    from suanli.router.ops.whatif import Scenario, run_whatif

    config = small_config(tmp_path)
    lines = ['{"trace": "suanli/v1", "start": "2026-12-01T09:00:00+08:00"}']
    lines += [
        json.dumps(
            {
                "t": 60.0 * i,
                "model": "deepseek-flash",
                "class": "interactive",
                "origin": "east",
                "input": 2000,
                "output": 500,
            }
        )
        for i in range(40)
    ]
    keys = ["key-chat" if i % 2 else "key-bulk" for i in range(40)]
    wuhan_down = Scenario(
        name="wuhan out", events=({"t": 0, "event": "region_down", "region": "wuhan", "until": 7200},)
    )
    result = run_whatif(
        config,
        lines,
        keys,
        [wuhan_down],
        ledger_cash_yuan=0.0,
        priorities={"key-chat": "critical", "key-bulk": "sheddable"},
    )
    (outcome,) = result.scenarios
    assert set(outcome.by_key) == {"key-chat", "key-bulk"}
    assert outcome.by_priority["critical"]["requests"] == 20
    # the wuhan voucher paid this work; without wuhan both keys pay cash
    assert outcome.change_yuan > 0
    assert outcome.hurt_keys == ["key-bulk", "key-chat"]
    assert outcome.hurt_priorities == ["critical", "sheddable"]
