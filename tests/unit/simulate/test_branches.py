"""Branches of a replay: each gives exactly what its own replay gives, the common start replayed once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from suanli.router.ops.replay_day import load_scenario, thin
from suanli.router.ops.whatif import replanning_every
from suanli.router.simulate.branches import first_event_s, replay_branches
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import Event

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shocks_day(tmp_path_factory):
    # the public shocks day, one request in 12: an outage, a voucher cut, a price spike, a top-up;
    # re-planned hourly, as a what-if may, to keep the test short
    folder = tmp_path_factory.mktemp("ledger")
    config, trace = load_scenario(ROOT / "benchmarks" / "scenarios" / "shocks", folder)
    config, trace = thin(config, trace, 12)
    return replanning_every(config, 3600.0), trace


def test_each_branch_replays_as_it_would_alone(shocks_day) -> None:
    config, trace = shocks_day
    assert len(trace.events) == 4
    base = replace(trace, events=())
    at, until = 30 * 3600.0, 40 * 3600.0
    after_all = Event("region_down", rel_s=at, at_s=base.start_s + at, region="guiyang",
                      until_rel_s=until, until_s=base.start_s + until)
    branches = [
        *(replace(trace, events=(event,)) for event in trace.events),  # one shock each, at its time
        trace,  # all four
        replace(trace, events=(after_all,)),  # after the last arrival: only deferred work is left
    ]
    got_base, got = replay_branches(config, base, branches)
    alone_base = replay(config, base, "optimizer")
    assert got_base.decisions == alone_base.decisions
    assert got_base.balances == alone_base.balances
    cash = sum(d.cash_yuan for d in alone_base.decisions)
    moved = 0
    for branch, result in zip(branches, got, strict=True):
        alone = replay(config, branch, "optimizer")
        assert result.decisions == alone.decisions, f"branch at {first_event_s(branch) - base.start_s:.0f} s"
        assert (result.rejected, result.deadline_misses, result.balances) == (
            alone.rejected, alone.deadline_misses, alone.balances)
        moved += sum(d.cash_yuan for d in alone.decisions) != pytest.approx(cash, rel=1e-9)
    assert moved >= 3  # the shocks change the figures: the branches are not the base again


def test_a_branch_must_hold_the_base_requests(shocks_day) -> None:
    config, trace = shocks_day
    base = replace(trace, events=())
    with pytest.raises(ValueError, match="other requests"):
        replay_branches(config, base, [replace(trace, jobs=trace.jobs[:-1])])
    with pytest.raises(ValueError, match="has events"):
        replay_branches(config, trace, [trace])
