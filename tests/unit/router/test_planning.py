"""The live re-planner: a worker thread, clock-driven periods, re-plans on material changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from suanli.optimizer import Ask, InfeasibleError, Plan, Snapshot, plan
from suanli.router.core.planning import Replanner
from tests.harness import small_config

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class Recorder:
    """A solve function that records each snapshot and the thread it ran on."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.threads: list[str] = []
        self.failing = False

    def __call__(self, snapshot: Snapshot) -> Plan:
        self.snapshots.append(snapshot)
        self.threads.append(threading.current_thread().name)
        if self.failing:
            raise InfeasibleError("INFEASIBLE")
        return plan(snapshot)


@contextmanager
def replanner(tmp_path: Path, **options) -> Iterator[tuple[Replanner, Clock, dict, Recorder]]:
    config = small_config(tmp_path)
    clock, balances, solve = Clock(), {"wuhan-tokens": 100_000.0, "shanghai-credit": 0.5}, Recorder()
    blocked = options.pop("blocked", frozenset)
    planner = Replanner(config, clock=clock, balances=lambda: balances, blocked=blocked, solve=solve,
                        poll_s=0.02, min_gap_s=0.0, **options)
    planner.start()
    try:
        assert wait_for(lambda: planner.info()["plans"] == 1)
        yield planner, clock, balances, solve
    finally:
        planner.stop()


def ask(work_class: str = "interactive") -> Ask:
    return Ask(model="deepseek-flash", work_class=work_class, origin="east",  # type: ignore[arg-type]
               input_tokens=1000, output_tokens=300)


@pytest.mark.timeout(20)
def test_the_first_plan_is_solved_in_the_worker_thread(tmp_path):
    with replanner(tmp_path) as (planner, _, _, solve):
        assert solve.threads == ["suanli-replanner"]
        info = planner.info()
        assert info["reason"] == "start" and info["planned_at"] == T0.isoformat()
        assert planner.plan is not None and set(info["shadow_prices"]) == {"wuhan-tokens", "shanghai-credit"}
        assert set(info["capacity_prices"]) == {"shanghai", "wuhan", "qingyang"}


@pytest.mark.timeout(20)
def test_a_slow_solve_never_blocks_the_request_path(tmp_path):
    release = threading.Event()

    def slow(snapshot: Snapshot) -> Plan:
        release.wait(10)
        return plan(snapshot)

    planner = Replanner(small_config(tmp_path), clock=Clock(), balances=dict, solve=slow, poll_s=0.02)
    planner.start()
    try:
        started = time.perf_counter()
        for _ in range(100):
            planner.served(ask(), region="wuhan", prompt_tokens=1000, completion_tokens=300, reported=True,
                           at=T0)
            planner.info()
        assert time.perf_counter() - started < 1.0
        assert planner.plan is None  # still solving: the chooser stays greedy meanwhile
        release.set()
        assert wait_for(lambda: planner.plan is not None)
    finally:
        release.set()
        planner.stop()


@pytest.mark.timeout(20)
def test_replans_every_replan_s_of_clock_time(tmp_path):
    with replanner(tmp_path) as (planner, clock, _, _):
        time.sleep(0.3)  # many polls, but the clock has not moved
        assert planner.info()["plans"] == 1
        clock.now = T0 + timedelta(seconds=59)
        time.sleep(0.2)
        assert planner.info()["plans"] == 1
        clock.now = T0 + timedelta(seconds=60)
        assert wait_for(lambda: planner.info()["plans"] == 2)
        assert planner.info()["reason"] == "periodic"
        assert planner.info()["planned_at"] == clock.now.isoformat()


@pytest.mark.timeout(20)
def test_a_material_balance_change_replans_at_once(tmp_path):
    with replanner(tmp_path) as (planner, _, balances, solve):
        balances["wuhan-tokens"] = 96_000.0  # 4%: not material
        time.sleep(0.3)
        assert planner.info()["plans"] == 1
        balances["wuhan-tokens"] = 40_000.0
        assert wait_for(lambda: planner.info()["plans"] == 2)
        assert planner.info()["reason"] == "balance"
        assert solve.snapshots[-1].balances["wuhan-tokens"] == 40_000.0


@pytest.mark.timeout(20)
def test_a_voucher_running_dry_replans(tmp_path):
    with replanner(tmp_path) as (planner, _, balances, _):
        balances["shanghai-credit"] = 0.0
        assert wait_for(lambda: planner.info()["plans"] == 2)
        assert planner.info()["reason"] == "balance"


@pytest.mark.timeout(20)
def test_a_blocked_region_replans_without_it(tmp_path):
    blocked: set[str] = set()
    with replanner(tmp_path, blocked=lambda: frozenset(blocked)) as (planner, _, _, solve):
        blocked.add("qingyang")
        assert wait_for(lambda: planner.info()["plans"] == 2)
        assert planner.info()["reason"] == "health"
        assert solve.snapshots[-1].blocked == frozenset({"qingyang"})


@pytest.mark.timeout(20)
def test_a_failed_solve_keeps_the_previous_plan(tmp_path):
    with replanner(tmp_path) as (planner, clock, _, solve):
        first = planner.plan
        solve.failing = True
        clock.now = T0 + timedelta(seconds=60)
        assert wait_for(lambda: planner.info()["error"] is not None)
        assert planner.plan is first and planner.info()["plans"] == 1
        assert len(solve.snapshots) == 4  # the start, then the forecast at 1, 1/2 and 1/4


@pytest.mark.timeout(20)
def test_learned_ratios_reach_the_chooser_and_the_planner(tmp_path):
    with replanner(tmp_path, min_ratio_samples=3) as (planner, _, _, solve):
        for _ in range(3):
            planner.served(ask(), region="qingyang", prompt_tokens=1500, completion_tokens=300, reported=True,
                           at=T0)
        assert planner.token_ratios == {("qingyang", "deepseek-flash"): 1.5}
        assert wait_for(lambda: planner.info()["reason"] == "token_ratio")
        assert solve.snapshots[-1].token_ratios == {("qingyang", "deepseek-flash"): 1.5}
        row = planner.info()["token_ratios"]["qingyang/deepseek-flash"]
        assert row == {"configured": 1.0, "estimate": 1.5, "samples": 3, "in_use": 1.5}


@pytest.mark.timeout(20)
def test_served_traffic_becomes_forecast_demand(tmp_path):
    with replanner(tmp_path) as (planner, clock, _, solve):
        assert solve.snapshots[0].demand == ()
        for _ in range(30):
            planner.served(ask("batch"), region="qingyang", prompt_tokens=1000, completion_tokens=300,
                           reported=True, at=clock.now)
        clock.now = T0 + timedelta(seconds=60)
        assert wait_for(lambda: planner.info()["plans"] == 2)
        demand = solve.snapshots[-1].demand
        assert {(d.work_class, d.origin, d.model) for d in demand} == {("batch", "east", "deepseek-flash")}
        # 30 requests seen in the first minute: the forecast expects that pace to go on.
        assert sum(d.requests for d in demand) > 30
        assert planner.info()["forecast_requests"] == pytest.approx(sum(d.requests for d in demand), abs=1e-2)


@pytest.mark.timeout(20)
def test_an_abnormal_solve_on_overload_retries_with_a_smaller_forecast(tmp_path):
    def fussy(snapshot: Snapshot) -> Plan:
        # Stands in for GLOP ending ABNORMAL when the forecast dwarfs the regions' limits.
        if sum(d.requests for d in snapshot.demand) > 100:
            raise InfeasibleError("ABNORMAL")
        return plan(snapshot)

    clock = Clock()
    planner = Replanner(small_config(tmp_path), clock=clock, balances=dict, solve=fussy, poll_s=0.02,
                        min_gap_s=0.0)
    planner.start()
    try:
        assert wait_for(lambda: planner.info()["plans"] == 1)
        assert planner.info()["demand_scale"] == 1.0
        for _ in range(2):  # 2 requests in the first minute: 2 per 10 min expected, ~290 a day
            planner.served(ask(), region="wuhan", prompt_tokens=1000, completion_tokens=300, reported=True,
                           at=clock.now)
        clock.now = T0 + timedelta(seconds=60)
        assert wait_for(lambda: planner.info()["plans"] == 2)
        info = planner.info()
        assert info["demand_scale"] == 0.25 and info["error"] is None
        assert 100 < info["forecast_requests"] <= 400
    finally:
        planner.stop()


@pytest.mark.timeout(20)
def test_a_replay_day_told_its_end_forecasts_nothing_after_it(tmp_path):
    """The live replay's planner plans for the day it replays, as simulate's does: demand the
    traffic leads it to expect stops at the end it is told, and stays on before it."""
    config = small_config(tmp_path)
    end_s = T0.timestamp() + 2 * 3600.0
    told = Replanner(config, clock=Clock(), balances=dict, poll_s=0.02)
    told.expect_no_demand_after(end_s)
    untold = Replanner(config, clock=Clock(), balances=dict, poll_s=0.02)
    for planner in (told, untold):
        for minute in range(60):
            planner.served(ask(), region="wuhan", prompt_tokens=1000, completion_tokens=300, reported=False,
                           at=T0 + timedelta(minutes=minute))
    edges = tuple(T0.timestamp() + h * 3600.0 for h in range(7))
    now_s = T0.timestamp() + 3600.0

    def requests(planner: Replanner, begin_s: float, end: float) -> float:
        return sum(d.requests for d in planner.forecast(edges, now_s) if begin_s <= d.earliest < end)

    assert requests(told, now_s, end_s) == pytest.approx(requests(untold, now_s, end_s), rel=1e-9)
    assert requests(told, now_s, end_s) > 10
    assert requests(told, end_s, edges[-1]) == 0
    assert requests(untold, end_s, edges[-1]) > 10
