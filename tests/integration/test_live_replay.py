"""The live replay harness end to end: a short day through the proxy, sims and ledger, next to simulate."""

from __future__ import annotations

import asyncio

import pytest

from suanli.router.ops.live_replay import run_live
from suanli.router.ops.replay_day import compare, simulate_side
from suanli.router.simulate.trace import parse_trace
from tests.harness import small_config

HEADER = '{"trace": "suanli/v1", "start": "2026-12-01T10:00:00+08:00"}'


def day() -> list[str]:
    lines = [HEADER]
    for i in range(90):  # an hour and a half: interactive every minute, batch every third
        work = "batch" if i % 3 == 2 else "interactive"
        extra = ', "deadline_s": 7200' if work == "batch" else ""
        lines.append(f'{{"t": {i * 60.0 + 5}, "model": "deepseek-flash", "class": "{work}", "origin": "east",'
                     f' "input": {400 + 7 * i}, "output": {120 + (i * 37) % 300}{extra}}}')
    return lines


@pytest.mark.timeout(240)
def test_a_short_day_live_matches_simulate(tmp_path):
    config = small_config(tmp_path)
    trace = parse_trace(day(), config)
    live = asyncio.run(run_live(config, trace, minutes=0.75, stream_every=3, flush_s=600.0))
    paper = simulate_side(config, trace)
    row = compare(live.side, paper)
    assert live.side.requests == paper.requests == 90
    # every interactive request answered, within the SLO where the client timed its first token
    assert row["rejected_live"] == row["rejected_sim"] == 0, live.errors
    assert live.side.slo_measured >= 15 and live.side.slo_misses == 0
    # batch lines ran within their windows, west as simulate placed them (the live plan is
    # solved at other moments than the replay's, so a near-tie may fall the other way)
    assert row["miss_live"] == row["miss_sim"] == 0
    assert paper.where["batch"]["qingyang"] == 30 and live.side.where["batch"]["qingyang"] >= 27, row
    # the voucher pays interactive work on both sides; cash agrees
    assert live.side.where["interactive"]["wuhan"] >= 55, dict(live.side.where["interactive"])
    assert 0.9 <= row["ratio"] <= 1.03, row
