"""What-if: a team's own traffic replayed under the current config and under named scenarios.

A scenario is what DESIGN.md's replay already knows: shock events added to the exported trace
(``voucher_delta``, ``region_down``, ``price_factor``) and vouchers added to the config (a bonus,
a new programme's). Every scenario is one ``simulate --policy optimizer`` replay of the same
requests (``router.simulate.engine.replay``); the base is the replay with none of them. Per
scenario: cash, change from base, interactive rejections, deadline misses, and per class and
per key what changed, so the classes and keys a scenario hurts can be named.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import orjson

from suanli.config import Config, Voucher
from suanli.router.simulate.branches import replay_branches
from suanli.router.simulate.engine import Replay, replay
from suanli.router.simulate.trace import Trace, parse_trace

__all__ = [
    "REPLAN_S",
    "Outcome",
    "Scenario",
    "WhatIf",
    "at_balances",
    "replanning_every",
    "replay_scenario",
    "replay_together",
    "run_whatif",
    "with_vouchers",
]

# A class or key is hurt when its cash rises by more than this share of its base cash (and
# more than half a fen), or when more of its requests go unserved.
_HURT_SHARE = 0.01
_HURT_MIN_YUAN = 0.005
REPLAN_S = 1800.0  # whatif, value and advise re-plan every half hour of the replayed day


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named change to the base: events added to the trace, vouchers added to the config."""

    name: str
    note: str = ""
    events: tuple[dict, ...] = ()  # DESIGN.md event lines, ``t``/``until`` after the trace start
    vouchers: tuple[Voucher, ...] = ()


@dataclass(slots=True)
class Outcome:
    """One replay's figures. ``by_class``/``by_key``: name -> {requests, unserved, cash_yuan}."""

    name: str
    note: str
    requests: int
    served: int
    cash_yuan: float
    rejected: int  # interactive requests not served
    deadline_misses: int  # batch and training requests not started in their windows
    voucher_spent: dict[str, float]  # voucher id -> units spent
    by_class: dict[str, dict[str, float]]
    by_key: dict[str, dict[str, float]]
    wall_s: float = 0.0
    change_yuan: float = 0.0  # cash less the base's
    hurt_classes: list[str] = field(default_factory=list)
    hurt_keys: list[str] = field(default_factory=list)
    # key priority -> {requests, unserved, cash_yuan}, when the ledger's keys carry a priority
    by_priority: dict[str, dict[str, float]] = field(default_factory=dict)
    hurt_priorities: list[str] = field(default_factory=list)
    unserved: list[int] = field(default_factory=list)  # trace requests not served (not in the JSON)

    def as_json(self) -> dict:
        out = asdict(self)
        del out["unserved"]
        out["cash_yuan"] = round(self.cash_yuan, 6)
        out["change_yuan"] = round(self.change_yuan, 6)
        out["wall_s"] = round(self.wall_s, 3)
        return out


@dataclass(slots=True)
class WhatIf:
    """The base replay and each scenario's, against what the ledger recorded."""

    base: Outcome
    scenarios: list[Outcome]
    ledger_cash_yuan: float
    requests: int
    wall_s: float = 0.0
    # the ledger's cash for the requests the base replay served too: the like-for-like comparison
    ledger_cash_served_yuan: float | None = None

    @property
    def base_vs_ledger(self) -> float:
        """The base replay's cash over the ledger's (1.0 when both are zero)."""
        if self.ledger_cash_yuan <= 1e-12:
            return 1.0 if self.base.cash_yuan <= 1e-12 else math.inf
        return self.base.cash_yuan / self.ledger_cash_yuan

    def as_json(self) -> dict:
        return {
            "requests": self.requests,
            "ledger_cash_yuan": round(self.ledger_cash_yuan, 6),
            # None: the ledger paid no cash and the replay did
            "base_vs_ledger": round(self.base_vs_ledger, 6) if math.isfinite(self.base_vs_ledger) else None,
            "ledger_cash_served_yuan": (
                None if self.ledger_cash_served_yuan is None else round(self.ledger_cash_served_yuan, 6)
            ),
            "wall_s": round(self.wall_s, 3),
            "base": self.base.as_json(),
            "scenarios": [s.as_json() for s in self.scenarios],
        }


def with_vouchers(config: Config, vouchers: Sequence[Voucher]) -> Config:
    """``config`` with ``vouchers`` added (their regions checked: a replay cannot pay elsewhere)."""
    if not vouchers:
        return config
    regions = {r.id for r in config.regions}
    known = {v.id for v in config.vouchers}
    for voucher in vouchers:
        if voucher.region not in regions:
            raise ValueError(f"voucher {voucher.id!r}: region {voucher.region!r} is not in the config")
        if voucher.id in known:
            raise ValueError(f"voucher {voucher.id!r} is already in the config")
    return config.model_copy(update={"vouchers": (*config.vouchers, *vouchers)})


def replanning_every(config: Config, seconds: float | None) -> Config:
    """``config`` whose planner re-plans every ``seconds`` (a replay solves at most every 300 s anyway).

    A what-if replays the same day five times: re-planning every half hour instead of every
    five minutes cuts the solves six-fold for about a percent of cash on a demo day (README).
    None keeps the config's own.
    """
    if seconds is None:
        return config
    return config.model_copy(update={"planner": config.planner.model_copy(update={"replan_s": seconds})})


def at_balances(config: Config, balances: dict[str, float]) -> Config:
    """``config`` whose vouchers start from ``balances`` (voucher id -> units) instead of their amounts."""
    vouchers = tuple(
        v.model_copy(update={"amount": max(balances[v.id], 0.0)}) if v.id in balances else v
        for v in config.vouchers
    )
    return config.model_copy(update={"vouchers": vouchers})


def replay_scenario(
    config: Config, lines: Sequence[str], keys: Sequence[str | None], scenario: Scenario
) -> Outcome:
    """Replay the exported ``lines`` with ``scenario``'s events and vouchers (``keys``: request -> key)."""
    started = time.perf_counter()
    config = with_vouchers(config, scenario.vouchers)
    trace = _trace(config, lines, scenario)
    return _outcome(scenario, trace, replay(config, trace, "optimizer"), keys, time.perf_counter() - started)


def replay_together(
    config: Config, lines: Sequence[str], keys: Sequence[str | None], scenarios: Sequence[Scenario]
) -> list[Outcome]:
    """The first scenario (no events, unless alone) replayed, and the others (events only) as its branches.

    Each branch replays from the first's state at its first event (``router.simulate.branches``):
    the same figures ``replay_scenario`` gives, the common start replayed once."""
    first, *rest = scenarios
    if not rest:
        return [replay_scenario(config, lines, keys, first)]
    if any(s.vouchers for s in rest):
        raise ValueError("a branch adds events only")
    started = time.perf_counter()
    config = with_vouchers(config, first.vouchers)
    traces = [_trace(config, lines, s) for s in scenarios]
    base, branched = replay_branches(config, traces[0], traces[1:])
    base.wall_s += time.perf_counter() - started - sum(r.wall_s for r in (base, *branched))  # parsing
    results = [base, *branched]
    return [_outcome(s, t, r, keys, r.wall_s) for s, t, r in zip(scenarios, traces, results, strict=True)]


def _trace(config: Config, lines: Sequence[str], scenario: Scenario) -> Trace:
    return parse_trace([*lines, *(orjson.dumps(e).decode() for e in scenario.events)], config)


def _outcome(
    scenario: Scenario, trace: Trace, result: Replay, keys: Sequence[str | None], wall_s: float
) -> Outcome:
    by_class: dict[str, dict[str, float]] = {}
    by_key: dict[str, dict[str, float]] = {}
    spent: dict[str, float] = {}
    unserved: list[int] = []
    cash = 0.0
    served = 0
    for decision in result.decisions:
        job = trace.jobs[decision.i]
        key = keys[decision.i] or "(master key)"
        for table, name in ((by_class, job.work_class), (by_key, key)):
            row = table.setdefault(name, {"requests": 0, "unserved": 0, "cash_yuan": 0.0})
            row["requests"] += 1
            if decision.region is None:
                row["unserved"] += 1
            row["cash_yuan"] += decision.cash_yuan
        if decision.region is None:
            unserved.append(decision.i)
        else:
            served += 1
            cash += decision.cash_yuan
        if decision.voucher is not None:
            spent[decision.voucher] = spent.get(decision.voucher, 0.0) + decision.voucher_units
    return Outcome(
        name=scenario.name,
        note=scenario.note,
        requests=len(trace.jobs),
        served=served,
        cash_yuan=cash,
        rejected=result.rejected,
        deadline_misses=result.deadline_misses,
        voucher_spent=spent,
        by_class=by_class,
        by_key=by_key,
        wall_s=wall_s,
        unserved=unserved,
    )


def _groups(scenarios: Sequence[Scenario]) -> list[list[int]]:
    # Replays run together: the base (0) with every scenario of events only whose first event
    # comes after the start (it shares the base's replay until then); every other one alone.
    together, alone = [0], []
    for n, scenario in enumerate(scenarios, start=1):
        later = scenario.events and min(float(e.get("t", 0.0)) for e in scenario.events) > 0.0
        (together if later and not scenario.vouchers else alone).append(n)
    return [together, *([n] for n in alone)]


def _hurt(base: dict[str, dict[str, float]], other: dict[str, dict[str, float]]) -> list[str]:
    hurt = []
    for name, row in sorted(other.items()):
        was = base.get(name, {"unserved": 0, "cash_yuan": 0.0})
        more_cash = row["cash_yuan"] - was["cash_yuan"]
        if row["unserved"] > was["unserved"] or more_cash > max(
            _HURT_MIN_YUAN, _HURT_SHARE * was["cash_yuan"]
        ):
            hurt.append(name)
    return hurt


def _by_priority(
    by_key: dict[str, dict[str, float]], priorities: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, row in by_key.items():
        into = out.setdefault(priorities.get(key, "normal"), {"requests": 0, "unserved": 0, "cash_yuan": 0.0})
        for measure, value in row.items():
            into[measure] += value
    return out


def run_whatif(
    config: Config,
    lines: Sequence[str],
    keys: Sequence[str | None],
    scenarios: Sequence[Scenario],
    *,
    ledger_cash_yuan: float,
    workers: int = 1,
    progress: Callable[[Outcome], None] | None = None,
    priorities: Mapping[str, str] | None = None,
    ledger_cash: Sequence[float] | None = None,
) -> WhatIf:
    """The base and every scenario replayed (in ``workers`` processes), compared with the base.

    ``priorities``: key id -> its priority, when keys carry one: the figures per priority too.
    ``ledger_cash``: request -> the cash the ledger recorded, for the like-for-like comparison.
    """
    started = time.perf_counter()
    todo = [Scenario(name="base", note="the current config, as the ledger's day began"), *scenarios]
    groups = _groups(scenarios)
    found: dict[int, Outcome] = {}

    def done(group: list[int], outcomes: list[Outcome]) -> None:
        for n, outcome in zip(group, outcomes, strict=True):
            found[n] = outcome
            if progress is not None:
                progress(outcome)

    parts = [[todo[n] for n in group] for group in groups]
    if workers <= 1 or len(groups) == 1:
        for group, part in zip(groups, parts, strict=True):
            done(group, replay_together(config, lines, keys, part))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            # the longest first: the base and its branches
            futures = [pool.submit(replay_together, config, list(lines), list(keys), part) for part in parts]
            for group, future in zip(groups, futures, strict=True):
                done(group, future.result())
    outcomes = [found[n] for n in range(len(todo))]
    if priorities:
        for outcome in outcomes:
            outcome.by_priority = _by_priority(outcome.by_key, priorities)
    base, *rest = outcomes
    for outcome in rest:
        outcome.change_yuan = outcome.cash_yuan - base.cash_yuan
        outcome.hurt_classes = _hurt(base.by_class, outcome.by_class)
        outcome.hurt_keys = _hurt(base.by_key, outcome.by_key)
        outcome.hurt_priorities = _hurt(base.by_priority, outcome.by_priority)
    return WhatIf(
        base=base,
        scenarios=rest,
        ledger_cash_yuan=ledger_cash_yuan,
        requests=base.requests,
        ledger_cash_served_yuan=(
            None
            if ledger_cash is None
            else math.fsum(ledger_cash) - math.fsum(ledger_cash[i] for i in base.unserved)
        ),
        wall_s=time.perf_counter() - started,
    )
