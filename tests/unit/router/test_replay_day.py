"""Shaping a scenario day for the live replay: its first hours, one request in N."""

from __future__ import annotations

import pytest

from suanli.config import Limits
from suanli.router.ops.replay_day import cut, simulate_side, thin
from suanli.router.simulate.trace import parse_trace
from tests.harness import small_config

HEADER = '{"trace": "suanli/v1", "start": "2026-12-01T00:00:00+08:00"}'


def trace_lines(n: int) -> list[str]:
    lines = [HEADER]
    for i in range(n):
        work = "batch" if i % 3 == 2 else "interactive"
        lines.append(f'{{"t": {i * 60.0}, "model": "deepseek-flash", "class": "{work}", "origin": "east",'
                     f' "input": {500 + i}, "output": 200}}')
    return lines


def test_thin_keeps_one_request_in_n_on_a_config_scaled_to_match(tmp_path):
    config = small_config(tmp_path)
    limited = config.regions[0].model_copy(update={"limits": Limits(rpm=72, tpm=34_001)})
    config = config.model_copy(update={"regions": (limited, *config.regions[1:])})
    trace = parse_trace(trace_lines(300), config)
    thinned_config, thinned = thin(config, trace, 4)
    assert [j.index for j in thinned.jobs] == list(range(75))
    assert [j.input_tokens for j in thinned.jobs] == [trace.jobs[i].input_tokens for i in range(0, 300, 4)]
    assert thinned.offsets_s == tuple(trace.offsets_s[i] for i in range(0, 300, 4))
    for before, after in zip(config.vouchers, thinned_config.vouchers, strict=True):
        assert after.amount == pytest.approx(before.amount / 4)
    assert (thinned_config.regions[0].limits.rpm, thinned_config.regions[0].limits.tpm) == (18, 8500)
    assert all(r.limits.rpm is None for r in thinned_config.regions[1:])
    # every request of the thinned day is decided by simulate under its own index
    side = simulate_side(thinned_config, thinned)
    assert side.requests == 75


def test_thin_by_one_and_cut_to_no_hours_leave_the_day_alone(tmp_path):
    config = small_config(tmp_path)
    trace = parse_trace(trace_lines(100), config)
    assert thin(config, trace, 1) == (config, trace)
    assert cut(trace, None) is trace
    assert len(cut(trace, 1.0).jobs) == 60  # t = 0, 60, ..., 3540 s
