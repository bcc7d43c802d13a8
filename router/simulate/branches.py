"""Replays that share their start: a base trace and branches of it, each with events added.

Until a branch's first event its replay *is* the base's: the optimizer learns an event only at
its ``t`` and the rules apply it only from then (DESIGN.md), and a replay is deterministic.
So the base's engine is copied as it reaches that time, and the copy goes on with the
branch's events: each result is the one ``replay(config, branch, "optimizer")`` gives, for
the part of the day after the branch's first event. ``whatif`` replays a region out from
noon or a price spike from nine this way (``tests/unit/simulate/test_branches.py``).
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from suanli.config import Config
from suanli.optimizer import index_for
from suanli.router.simulate.engine import Engine
from suanli.router.simulate.results import Replay
from suanli.router.simulate.shocks import Shocks
from suanli.router.simulate.trace import Trace

__all__ = ["first_event_s", "replay_branches"]


def first_event_s(trace: Trace) -> float:
    """When the trace's first event happens (epoch s; inf without events)."""
    return min((e.at_s for e in trace.events), default=float("inf"))


def replay_branches(config: Config, trace: Trace, branches: Sequence[Trace]) -> tuple[Replay, list[Replay]]:
    """The optimizer's replay of ``trace`` (no events) and of each branch (its requests, events added)."""
    if trace.events:
        raise ValueError("the base trace of branches has events")
    for branch in branches:
        if branch.start_s != trace.start_s or branch.jobs != trace.jobs:
            raise ValueError("a branch holds other requests than its base")
    engine = Engine(config, trace, "optimizer")
    twins: dict[int, Engine] = {}

    def fork(n: int) -> None:
        twins[n] = _fork(engine, branches[n])

    order = sorted(range(len(branches)), key=lambda n: first_event_s(branches[n]))
    engine.stops = [(first_event_s(branches[n]), lambda n=n: fork(n)) for n in order]
    # one full collection for them all (each run collects what is not frozen, then freezes)
    ours = gc.get_freeze_count() == 0
    gc.collect()
    gc.freeze()
    try:
        base = _timed(engine)
        return base, [_timed(twins[n]) for n in range(len(branches))]
    finally:
        if ours:
            gc.unfreeze()


def _timed(engine: Engine) -> Replay:
    started = time.perf_counter()
    out = engine.run()
    out.wall_s = time.perf_counter() - started
    return out


def _fork(engine: Engine, trace: Trace) -> Engine:
    # A copy of ``engine`` as it stands, going on with ``trace``'s events. The requests and
    # the config are shared (immutable), the solver's thread is the copy's own.
    solver, stops = engine.solver, engine.stops
    engine.solver, engine.stops = None, []  # type: ignore[assignment]
    try:
        memo: dict[int, object] = {id(job): job for job in engine.trace.jobs}
        # the configs' lookup tables are caches beside them (holding a lock)
        configs = (engine.config, engine.view)
        for shared in (engine.trace, *configs, *map(index_for, configs)):
            memo[id(shared)] = shared
        twin = copy.deepcopy(engine, memo)
    finally:
        engine.solver, engine.stops = solver, stops
    twin.solver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suanli-replan")
    twin.trace, twin.shocks, twin.next_event = trace, Shocks(engine.config, trace.events), 0
    return twin
