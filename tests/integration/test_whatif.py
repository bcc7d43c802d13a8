"""The team's own traffic, end to end: a short day through the live proxy, then ``trace export``,
``simulate`` on the export, ``whatif``, ``value``, ``advise`` and ``GET /admin/whatif`` on its ledger."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web

from suanli.config import load_config
from suanli.router.http.app import create_app
from suanli.router.ledger.port import read_audit_source
from suanli.router.ops.cli import main
from suanli.router.ops.live_replay import run_live
from suanli.router.ops.whatif_route import add_whatif_route
from suanli.router.simulate.trace import parse_trace
from tests.harness import small_config
from tests.integration.test_live_replay import day

SINCE, UNTIL = "2026-12-01T10:00:00+08:00", "2026-12-01T13:00:00+08:00"
MASTER = "sk-whatif-master"


@pytest.fixture(scope="module")
def live_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger holding a short day served by the live proxy (interactive and batch), and its config file."""
    folder = tmp_path_factory.mktemp("whatif-day")
    config = small_config(folder)
    asyncio.run(run_live(config, parse_trace(day(), config), minutes=0.5, stream_every=3, flush_s=600.0))
    path = folder / "suanli.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def _ledger_rows(path: Path) -> list:
    with read_audit_source(load_config(path).ledger.url) as ledger:
        return ledger.usage()


@pytest.mark.timeout(300)
def test_an_exported_day_replays_to_what_the_ledger_recorded(live_day: Path, capsys, tmp_path: Path) -> None:
    out = tmp_path / "day.jsonl"
    code, _ = _cli(
        capsys,
        "trace",
        "export",
        "--config",
        str(live_day),
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--out",
        str(out),
    )
    assert code == 0
    config = load_config(live_day)
    trace = parse_trace(out.read_text().splitlines(), config)  # strict: loads back
    rows = _ledger_rows(live_day)
    assert len(trace.jobs) == len(rows) == 90
    # classes and reference tokens exactly as the ledger has them (every offer here has ratio 1)
    assert sorted(j.work_class for j in trace.jobs) == sorted(r.work_class for r in rows)
    assert sum(j.input_tokens + j.output_tokens for j in trace.jobs) == sum(r.tokens for r in rows)
    assert all(j.latest_s > j.arrival_s for j in trace.jobs if j.work_class == "batch")
    # simulate serves every exported request, counts the same tokens, and pays about what live paid
    code, text = _cli(capsys, "simulate", "--config", str(live_day), "--trace", str(out), "--json")
    report = json.loads(text)
    assert report["served"] == report["requests"] == 90
    assert sum(r["tokens"] for r in report["by_region"].values()) == sum(r.tokens for r in rows)
    ledger_cash = math.fsum(r.cash_yuan for r in rows)
    assert report["cash_yuan"] == pytest.approx(ledger_cash, rel=0.10)


@pytest.mark.timeout(300)
def test_whatif_default_set_names_what_each_shock_costs(live_day: Path, capsys) -> None:
    code, text = _cli(
        capsys,
        "whatif",
        "--config",
        str(live_day),
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--json",
        "--workers",
        "1",
    )
    assert code == 0
    result = json.loads(text)
    assert result["requests"] == 90
    assert result["base_vs_ledger"] == pytest.approx(1.0, abs=0.10)
    assert 0 < result["ledger_cash_served_yuan"] <= result["ledger_cash_yuan"] + 1e-9
    names = [s["name"] for s in result["scenarios"]]
    assert names == [
        "voucher halved",
        "busiest region out 6 h",
        "east prices x2 at peak",
        "bonus 10% of last month",
    ]
    by = {s["name"]: s for s in result["scenarios"]}
    # the wuhan voucher pays the interactive work: halving it, or losing wuhan, costs interactive cash
    assert by["voucher halved"]["change_yuan"] > 0 and "interactive" in by["voucher halved"]["hurt_classes"]
    assert by["busiest region out 6 h"]["change_yuan"] > 0
    assert by["busiest region out 6 h"]["note"].startswith("wuhan down")
    # a bonus only saves
    assert by["bonus 10% of last month"]["change_yuan"] <= 1e-9
    assert by["bonus 10% of last month"]["hurt_classes"] == []


@pytest.mark.timeout(300)
def test_whatif_scenario_file_and_a_bad_one(live_day: Path, capsys, tmp_path: Path) -> None:
    good = tmp_path / "scenarios.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "scenarios": [
                    {
                        "name": "qingyang out all day",
                        "region_down": {"region": "qingyang", "hours": 24, "at_h": 0},
                    },
                    {
                        "name": "cut at noon",
                        "events": [
                            {
                                "t": 7200,
                                "event": "voucher_delta",
                                "voucher": "wuhan-tokens",
                                "amount": -100000,
                            }
                        ],
                    },
                ]
            }
        )
    )
    code, text = _cli(
        capsys,
        "whatif",
        "--config",
        str(live_day),
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--scenarios",
        str(good),
        "--json",
        "--workers",
        "1",
    )
    assert code == 0
    result = json.loads(text)
    by = {s["name"]: s for s in result["scenarios"]}
    # batch went west; with qingyang out it runs east, where nothing served it in the base
    assert by["qingyang out all day"]["note"] == "qingyang down 0.0-24.0 h"
    assert by["qingyang out all day"]["deadline_misses"] == 0
    base_by_class = result["base"]["by_class"]
    assert (
        by["qingyang out all day"]["by_class"]["batch"]["requests"]
        == base_by_class["batch"]["requests"]
        == 30
    )
    # the cut leaves what the base had spent by then, and no more can be drawn than what is left
    assert by["cut at noon"]["voucher_spent"].get("wuhan-tokens", 0) <= 100000
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"scenarios": [{"name": "typo", "region_dwn": {"hours": 1}}]}))
    code = main(
        ["whatif", "--config", str(live_day), "--since", SINCE, "--until", UNTIL, "--scenarios", str(bad)]
    )
    assert code == 2
    assert "region_dwn" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_value_of_a_voucher_the_team_cannot_use_is_near_zero(live_day: Path, capsys) -> None:
    # Only interactive east traffic in the first hour; qingyang is outside the SLO for east callers
    # and the voucher is gone before the batch work of the day could use it.
    code, text = _cli(
        capsys,
        "value",
        "--config",
        str(live_day),
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--json",
        "--voucher",
        json.dumps(
            {
                "region": "qingyang",
                "kind": "tokens",
                "amount": 20000000,
                "valid_from": SINCE,
                "expires": "2026-12-01T10:09:00+08:00",
            }
        ),
    )
    assert code == 0
    found = json.loads(text)
    assert abs(found["saved_yuan"]) < 0.002 * max(found["cash_without_yuan"], 1e-9) + 1e-6
    assert found["used_units"] == 0


@pytest.mark.timeout(300)
def test_value_of_a_matching_voucher_is_the_cash_it_displaces(live_day: Path, capsys) -> None:
    # A small credit where the batch work goes: it pays batch cash there, yuan for yuan.
    code, text = _cli(
        capsys,
        "value",
        "--config",
        str(live_day),
        "--since",
        SINCE,
        "--until",
        UNTIL,
        "--json",
        "--voucher",
        json.dumps(
            {"region": "qingyang", "kind": "credit", "amount": 0.03, "valid_from": SINCE, "expires": UNTIL}
        ),
    )
    assert code == 0
    found = json.loads(text)
    assert found["used_units"] == pytest.approx(0.03, rel=0.01)
    assert found["saved_yuan"] == pytest.approx(found["used_units"], rel=0.05)
    # the plan's shadow price of a yuan of credit: at most a yuan (the LP may pay that work otherwise)
    assert -1e-9 <= found["shadow_yuan_per_unit"] <= 1.0 + 1e-6
    code, _ = _cli(capsys, "value", "--config", str(live_day), "--voucher", '{"region": "nowhere"}')
    assert code == 2


@pytest.mark.timeout(300)
def test_advise_lists_every_programme_with_its_gap(live_day: Path, capsys) -> None:
    code, text = _cli(
        capsys, "advise", "--config", str(live_day), "--since", SINCE, "--until", UNTIL, "--json"
    )
    assert code == 0
    lines = {a["programme"]: a for a in json.loads(text)}
    assert {"wuhan-municipal", "qingyang-compute", "guiyang-compute"} <= lines.keys()
    assert lines["qingyang-compute"]["qualifies"] == "no"
    assert lines["qingyang-compute"]["gap_yuan"] > 0
    assert lines["hangzhou-compute"]["value_yuan"] is None  # no such region in this config


@pytest.mark.timeout(300)
def test_admin_whatif_behind_the_master_key(live_day: Path) -> None:
    config = load_config(live_day).model_copy(update={"master_key": MASTER})

    async def go() -> tuple[int, int, dict]:
        app = create_app(config, master_key=MASTER, routes=(add_whatif_route,))
        runner = web.AppRunner(app)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        query = f"since={SINCE.replace('+', '%2B')}&until={UNTIL.replace('+', '%2B')}"
        base = f"http://127.0.0.1:{port}/admin/whatif?{query}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(base) as anonymous:
                    refused = anonymous.status
                async with session.get(base, headers={"Authorization": f"Bearer {MASTER}"}) as answer:
                    return refused, answer.status, orjson.loads(await answer.read())
        finally:
            await runner.cleanup()

    refused, status, body = asyncio.run(go())
    assert refused == 401
    assert status == 200, body
    assert body["requests"] == 90 and len(body["scenarios"]) == 4
