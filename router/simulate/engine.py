"""The replay engine behind ``suanli simulate``: a virtual clock, no network, the live chooser.

Requests arrive in trace order. Each is decided when it arrives (interactive: start now
or be rejected; batch and training: a start in ``[t, t + deadline]``), its capacity is
booked in the clock minute it will start, and it is *executed* (its voucher drawn, its
cash charged) when the virtual clock reaches its start: balances are drawn in start
order, ties in trace order, exactly as DESIGN.md's checker replays them.
"""

from __future__ import annotations

import gc
import heapq
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config, Offer
from suanli.optimizer import (
    FORECAST_SPREAD,
    Ask,
    CapacityBook,
    Deferrer,
    Forecast,
    InfeasibleError,
    Job,
    Placement,
    Plan,
    Snapshot,
    State,
    charge,
    hindsight_plan,
    index_for,
    known_demand,
    minute_of,
    plan,
    rank,
    slot_edges,
)
from suanli.optimizer.pacing import Pacer
from suanli.optimizer.packages import expand_packages, fold_packages
from suanli.optimizer.plan import NO_LIMIT
from suanli.optimizer.prices import prepare_prices
from suanli.router.simulate.hindsight import book_ahead
from suanli.router.simulate.results import Booked, Decision, Replay
from suanli.router.simulate.room import first_room, late_start, rotate, victims
from suanli.router.simulate.shocks import Shocks
from suanli.router.simulate.swap import Trainer
from suanli.router.simulate.trace import Event, Trace, span_end
from suanli.router.simulate.wallet import Prompts, Reserved, Wallet

__all__ = ["POLICIES", "Decision", "Engine", "Replay", "replay"]

POLICIES = ("optimizer", "greedy", "round_robin", "hindsight")
_HINDSIGHT_REPLAN_S = 3600.0  # hindsight re-solves its (exact) remaining demand this often
# The live re-planner solves every ``planner.replan_s`` (60 s) in a worker thread; a replay
# runs a day in seconds, so it solves at most every five virtual minutes, and at once when
# a voucher runs dry (the live re-planner's "poke").
_SIM_MIN_REPLAN_S = 300.0
# No wall clock decides a replay's plan (a solve cut short by the live 2 s limit would keep
# the previous plan on a loaded machine only): the replay's LPs are bounded in size and
# GLOP, itself deterministic, solves each to completion.
_SIM_LIMIT_S = NO_LIMIT


class Engine:
    """One replay of a trace; ``run`` it once."""

    def __init__(self, config: Config, trace: Trace, policy: str) -> None:
        self.config = config
        self.trace = trace
        self.policy = policy
        self.tz = ZoneInfo(config.timezone)
        self.index = index_for(config)
        self.vouchers = {v.id: v for v in config.vouchers}
        # the rules' balances (per package period, under daily caps) and sessions' prompt caches
        self.wallet = Wallet(config)
        self.prompts = Prompts()
        self.offers = {(r.id, o.name): o for r in config.regions for o in r.models}
        self.clock_s = trace.start_s  # the arrival being decided: ``balances`` is what vouchers may pay then
        self.balances = self.wallet.view(trace.start_s)
        # vouchers whose payable amount changes with the time alone (a new period, a new day)
        self.timed = [v.id for v in config.vouchers if v.period is not None or v.daily_cap is not None]
        self.reserved = Reserved(self.wallet, lambda: self.clock_s, config)  # units booked jobs mean to draw
        self.book = CapacityBook(config)
        self.heap: list[tuple[float, int, Booked]] = []
        self.decisions: list[Decision | None] = [None] * len(trace.jobs)
        self.decision_ns: list[int] = []
        self.plan_s: list[float] = []
        self.rejected = self.misses = self.slo_violations = 0
        self.deferrer = Deferrer(config)
        self.plan: Plan | None = None
        self.next_plan_s = -float("inf")
        self.rr = 0
        # A trace ends: demand past its span never comes, so vouchers the rolling horizon
        # would keep for it are spent on the traffic in hand (the bound assumes as much).
        self.forecast = Forecast(config, start_s=trace.start_s, end_s=span_end(trace))
        self.bound: float | None = None
        self.ahead: set[int] = set()  # jobs hindsight booked before the loop
        self.solver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suanli-replan")
        # Trace events: applied at their time; the policy learns each then (``shocks``).
        self.shocks = Shocks(config, trace.events)
        self.next_event = 0
        self.changes: list[float] = []  # epoch seconds where a known window ends: re-plan then
        self.view = config  # the config as the policy sees it now (known price factors applied)
        # the optimizer paces each expiring voucher against its validity (``optimizer.pacing``)
        self.pacer = Pacer(config.vouchers) if policy == "optimizer" else None
        self.span_end_s = span_end(trace)
        self.next_job = 0  # trace position of the next arrival; ``stops``: (time, call), each called
        # once before the first arrival at or after its time (``router.simulate.branches``)
        self.stops: list[tuple[float, Callable[[], None]]] = []

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> Replay:
        # The trace and the engine live for the whole replay: keep the collector from
        # walking them on every collection, which would land in some decision's timing.
        # (A process that froze its own start-up, as ``serve`` does, keeps it frozen.)
        ours = gc.get_freeze_count() == 0
        gc.collect()
        gc.freeze()
        try:
            return self._run()
        finally:
            self.solver.shutdown()
            if ours:
                gc.unfreeze()

    def _run(self) -> Replay:
        if self.policy == "hindsight" and self.trace.jobs:
            started = time.perf_counter()
            # with events, the plan and its bound are the relaxation of ``Shocks.relaxed``
            relaxed = self.shocks.relaxed()
            raw = hindsight_plan(relaxed, self.trace.jobs, by_minute=True)
            self.plan_s.append(time.perf_counter() - started)
            self.bound = self.shocks.bound(relaxed, self.trace.jobs, raw)
            self.plan = fold_packages(raw, relaxed, self.trace.start_s)
            self.deferrer.set_plan(self.plan)
            self.next_plan_s = self.trace.start_s + _HINDSIGHT_REPLAN_S
            if not self.trace.events:
                # bookings made before the loop cannot step around an outage or a price
                # spike, nor use a top-up: with events, hindsight decides as requests come
                self.ahead = book_ahead(self)
        while self.next_job < len(self.trace.jobs):
            job, rel = self.trace.jobs[self.next_job], self.trace.offsets_s[self.next_job]
            now_s = self.trace.start_s + rel
            while self.stops and self.stops[0][0] <= now_s:
                self.stops.pop(0)[1]()
            self.next_job += 1
            self._advance(now_s, job.index)
            if self.policy in ("optimizer", "hindsight"):
                self._maybe_replan(now_s, job)
            self._decide(job, rel, now_s)
        while self.stops:  # after the last arrival
            self.stops.pop(0)[1]()
        self._advance(float("inf"), -1)
        return Replay(
            policy=self.policy,
            decisions=[d for d in self.decisions if d is not None],
            rejected=self.rejected,
            deadline_misses=self.misses,
            slo_violations=self.slo_violations,
            decision_ns=self.decision_ns,
            plan_s=self.plan_s,
            bound_cash_yuan=self.bound,
            # a package's: what its instance at the last arrival holds (earlier periods' leftovers are lost)
            balances={v: self.wallet.balance(v, self.clock_s) for v in self.balances},
        )

    # -- events --------------------------------------------------------------------------

    def _advance(self, now_s: float, index: int) -> None:
        # Execute what starts before ``now_s``, applying each event at its time (before the
        # requests starting then), and note the ends of known windows (a re-plan is due).
        events = self.trace.events
        while self.next_event < len(events) and events[self.next_event].at_s <= now_s:
            event = events[self.next_event]
            self.next_event += 1
            self._execute_until(event.at_s, -1)
            self._apply(event)
        while self.changes and self.changes[0] <= now_s:
            self._reconsider(self.changes.pop(0))
        self._execute_until(now_s, index)
        if now_s < float("inf"):
            self.clock_s = now_s
            self.balances.update((vid, self.wallet.payable(vid, now_s)) for vid in self.timed)

    def _apply(self, event: Event) -> None:
        if event.kind == "voucher_delta" and event.voucher is not None:
            # a cut floors at 0; validity and restrictions stay as they are; a package's current period
            self.wallet.adjust(event.voucher, event.at_s, event.amount)
            self.balances[event.voucher] = self.wallet.payable(event.voucher, event.at_s)
        else:
            self.shocks.learn(event)
            self.changes = [t for t in self.shocks.changes() if t > event.at_s]
            if event.kind == "region_down":
                self._move_off(event)
        self._reconsider(event.at_s)

    def _reconsider(self, at_s: float) -> None:
        # what the policy sees changed at ``at_s``: its view of prices; a re-plan at the next arrival
        now_view = self.shocks.view(at_s)
        if now_view is not self.view:
            self.view = now_view
            self.deferrer = Deferrer(now_view)
            if self.plan is not None:
                self.deferrer.set_plan(self.plan)
        if self.policy in ("optimizer", "hindsight"):
            self.next_plan_s = -float("inf")

    def _move_off(self, event: Event) -> None:
        # Jobs booked to start at a region now known to be down are placed again from now.
        moved = [b for _, _, b in self.heap if b.region == event.region and event.active(self._start_s(b))]
        self._unbook(moved)
        for booked in sorted(moved, key=lambda b: b.job.index):
            self._place_deferred(booked.job, event.rel_s, event.at_s)

    def _unbook(self, moved: list[Booked]) -> None:
        # take booked jobs off the heap, their capacity and their voucher draws
        gone = {id(b) for b in moved}
        self.heap = [e for e in self.heap if id(e[2]) not in gone]
        heapq.heapify(self.heap)
        for booked in moved:
            if booked.job.work_class != "training":
                self.book.release(booked.region, minute_of(self._start_s(booked)), booked.tokens)
            if booked.voucher is not None:
                self.reserved.add(booked.voucher, self._start_s(booked), -self._held(booked))

    def _start_s(self, booked: Booked) -> float:
        return self.trace.start_s + booked.rel_start

    def _execute_until(self, now_s: float, index: int) -> None:
        heap = self.heap
        while heap and (heap[0][0], heap[0][1]) < (now_s, index):
            _, _, booked = heapq.heappop(heap)
            self._execute(booked)

    def _execute(self, booked: Booked) -> None:
        job = booked.job
        start_s = self.trace.start_s + booked.rel_start
        voucher = self.vouchers.get(booked.voucher) if booked.voucher else None
        if voucher is not None:
            self.reserved.add(voucher.id, start_s, -self._held(booked))
        payable = self.wallet.payable(voucher.id, start_s) if voucher is not None else 0.0
        if payable <= 0:
            voucher = None
        # charged by the rules: the config's offer times the price factor of the events at the
        # start, times its time-of-use factor then; a session's cache hit pays cached_input
        offer = self.shocks.offer(booked.region, job.model, start_s) if self.trace.events else booked.offer
        paid = charge(
            offer,
            input_tokens=job.input_tokens,
            output_tokens=job.output_tokens,
            work_class=job.work_class,
            factor=self.index.factor(booked.offer, start_s),
            cached=self.prompts.cached(job, booked.offer, booked.region, start_s),
            voucher=voucher,
            balance=payable,
        )
        self.prompts.served(job, booked.region, start_s)
        if voucher is not None and paid.voucher_units > 0:
            self.wallet.draw(voucher.id, start_s, paid.voucher_units)
            self.balances[voucher.id] = self.wallet.payable(voucher.id, self.clock_s)
            if self.balances[voucher.id] <= 0 and self.policy == "optimizer":
                self.next_plan_s = -float("inf")  # a material change: re-plan at the next arrival
        else:
            voucher = None
        self.decisions[job.index] = Decision(
            i=job.index,
            region=booked.region,
            start=booked.rel_start,
            voucher=voucher.id if voucher else None,
            cash_yuan=paid.cash_yuan,
            tokens=paid.tokens,
            voucher_units=paid.voucher_units if voucher else 0.0,
        )

    def _held(self, booked: Booked) -> float:
        voucher = self.vouchers[booked.voucher] if booked.voucher else None
        return booked.held(voucher, self.index.factor(booked.offer, self._start_s(booked)))

    def book_job(
        self,
        job: Job,
        region: str,
        offer: Offer,
        voucher: str | None,
        rel_start: float,
        tokens: int,
        *,
        execute: bool = True,
    ) -> Booked:
        start_s = self.trace.start_s + rel_start
        if job.work_class != "training":
            self.book.add(region, minute_of(start_s), tokens)
        booked = Booked(job, region, offer, voucher, rel_start, tokens)
        if voucher is not None:
            self.reserved.add(voucher, start_s, self._held(booked))
        heapq.heappush(self.heap, (start_s, job.index, booked))
        if execute and start_s == self.trace.start_s + self.trace.offsets_s[job.index]:
            self._execute_until(start_s, job.index + 1)
        return booked

    def reject(self, job: Job) -> None:
        if job.work_class == "interactive":
            self.rejected += 1
        else:
            self.misses += 1
        self.decisions[job.index] = Decision(job.index, region=None, start=None, voucher=None, cash_yuan=0.0)

    # -- planning ------------------------------------------------------------------------

    def _maybe_replan(self, now_s: float, job: Job) -> None:
        if self.policy == "optimizer":
            self.forecast.observe_job(job, at_s=now_s)
        if now_s < self.next_plan_s:
            return
        interval = (
            max(self.config.planner.replan_s, _SIM_MIN_REPLAN_S)
            if self.policy == "optimizer"
            else _HINDSIGHT_REPLAN_S
        )
        self.next_plan_s = now_s + interval
        available = {v: max(self.balances[v] - self.reserved[v], 0.0) for v in self.balances}
        if self.policy == "optimizer":
            horizon_s = self.config.planner.horizon_h * 3600.0
            edges = slot_edges(self.config, now_s, now_s + horizon_s)
            demand = self.forecast.demand(edges, now_s)
        else:
            # without what was booked before the loop (``book_ahead``)
            later = [j for j in self.trace.jobs[job.index :] if j.index not in self.ahead]
            if not later:
                return  # nothing left to plan for
            horizon_s = max(j.latest_s for j in later) + 1.0 - now_s
            edges = slot_edges(self.config, now_s, now_s + horizon_s)
            demand = known_demand(later, edges, by_minute_until_s=now_s + 2 * _HINDSIGHT_REPLAN_S)
        self.book.forget_before(minute_of(now_s))
        # packages and capped vouchers: one plain voucher per instance in the horizon
        planned, planned_balances = expand_packages(self.view, now_s, now_s + horizon_s, available)
        snapshot = Snapshot(
            config=planned,
            now_s=now_s,
            horizon_s=horizon_s,
            balances=planned_balances,
            demand=demand,
            booked=self.book.committed_from(minute_of(now_s)),
            blocked=self.shocks.blocked(now_s),
        )
        started = time.perf_counter()
        limit_s = _SIM_LIMIT_S
        try:
            # In a worker thread, as the live re-planner solves, so the requests that follow
            # are decided as live ones are: on a core whose caches the solver did not
            # sweep. The replay waits for the plan: the virtual clock stands still meanwhile.
            spread = FORECAST_SPREAD if self.policy == "optimizer" else ()  # hindsight knows its demand
            fresh = self.solver.submit(_solve, snapshot, limit_s, spread).result()
        except InfeasibleError:
            return  # keep the previous plan, as the live re-planner does
        finally:
            self.plan_s.append(time.perf_counter() - started)
        if planned is not self.view:
            fresh = fold_packages(fresh, self.view, now_s)
            prepare_prices(self.view, fresh)
        if self.pacer is not None:
            self.pacer.step(now_s, available, self.span_end_s, fresh.voucher_price)
            fresh = self.pacer.apply(fresh)
            prepare_prices(self.view, fresh)
        self.plan = fresh
        self.deferrer.set_plan(fresh, available=available)

    # -- deciding ------------------------------------------------------------------------

    def _decide(self, job: Job, rel: float, now_s: float) -> None:
        if job.index in self.ahead:
            return  # booked before the loop
        if job.work_class == "interactive" or self.policy in ("greedy", "round_robin"):
            self._decide_now(job, rel, now_s)
            return
        self._place_deferred(job, rel, now_s)

    def _place_deferred(self, job: Job, rel: float, now_s: float) -> None:
        # batch or training work at ``now_s`` (``rel`` in), never at a region known to be down then
        available = {v: self.balances[v] - self.reserved[v] for v in self.balances}
        started = time.perf_counter_ns()
        placed = self.deferrer.place(job, now_s, self.book, available, self.reserved.renewed(now_s))
        self.decision_ns.append(time.perf_counter_ns() - started)
        if job.work_class == "training" and self.policy == "optimizer":
            # placed again with the training jobs booked but not started (``swap``)
            trainer = Trainer(self.view, self.forecast, self._held, self._start_s, self.shocks.down)
            booked = [b for _, _, b in self.heap if b.job.work_class == "training"]
            prices = self.plan.voucher_price if self.plan is not None else {}
            moves = trainer.reassign(job, now_s, booked, available, prices)  # type: ignore[arg-type]
            if moves is not None:
                self._unbook(moves.unbook)  # type: ignore[arg-type]
                for moved, at in moves.book:
                    self._book_placed(moved, rel, now_s, at)
                return
        if placed is not None and self.shocks.down(placed.region, max(placed.start_s, now_s)):
            self._first_room(job, rel, now_s)
            return
        if placed is None:
            self.reject(job)
            return
        self._book_placed(job, rel, now_s, placed)

    def _book_placed(self, job: Job, rel: float, now_s: float, placed: Placement) -> Booked:
        rel_start = rel if placed.start_s <= now_s else placed.start_s - self.trace.start_s
        if self.policy == "optimizer" and job.work_class == "batch" and not job.cached:
            start_s = self.trace.start_s + rel_start  # an interactive request may take its place (``evict``)
            terms = (self.trace.events, self.index, self.wallet, self.vouchers)
            rel_start += late_start(placed, start_s, job.latest_s, *terms) - start_s
        return self.book_job(job, placed.region, placed.offer, placed.voucher, rel_start, placed.tokens)

    def _make_room(self, job: Job, rel: float, now_s: float, options: list) -> bool:  # noqa: ANN001
        # Batch booked later in this minute at one of the request's regions gives way and is
        # placed again within its deadline; when one cannot be, everything stays as it was.
        minute = minute_of(now_s)
        for option in options:
            rid, tokens = option.region.id, option.charge.tokens
            moved = victims((b for _, _, b in self.heap), self._start_s, self.book, rid, now_s, tokens)
            if moved is None:
                continue
            self._unbook(moved)
            self.book.add(rid, minute, tokens)  # held for this request while they move
            again: list[Booked] = []
            for old in sorted(moved, key=lambda b: b.job.index):
                available = {v: self.balances[v] - self.reserved[v] for v in self.balances}
                renewed = self.reserved.renewed(now_s)
                placed = self.deferrer.place(old.job, now_s, self.book, available, renewed)
                if placed is None or self.shocks.down(placed.region, max(placed.start_s, now_s)):
                    break
                again.append(self._book_placed(old.job, rel, now_s, placed))
            self.book.release(rid, minute, tokens)
            if len(again) == len(moved):
                voucher = option.voucher.id if option.voucher else None
                self.book_job(job, rid, option.offer, voucher, rel, tokens)
                return True
            self._unbook(again)
            for b in moved:
                self.book_job(b.job, b.region, b.offer, b.voucher, b.rel_start, b.tokens, execute=False)
        return False

    def _ask(self, job: Job, at_s: float) -> Ask:
        # a session's follow-up is priced with its cached input where its prompt is cached now
        where = self.prompts.holder(job, at_s, self.offers) if job.cached > 0 else None
        return Ask(job.model, job.work_class, job.origin, job.input_tokens, job.output_tokens,
                   cached_tokens=job.cached if where else 0.0, cache_region=where)

    def _decide_now(self, job: Job, rel: float, now_s: float) -> None:
        ask = self._ask(job, now_s)
        use_plan = self.plan if self.policy in ("optimizer", "hindsight") else None
        balances = self.balances
        if use_plan is not None:
            # Units booked jobs mean to draw are spoken for.
            balances = {v: self.balances[v] - self.reserved[v] for v in self.balances}
        load = self.book.fill(minute_of(now_s)) if use_plan else {}
        state = State(balances=balances, load=load, blocked=self.shocks.blocked(now_s))
        when = datetime.fromtimestamp(now_s, UTC)
        started = time.perf_counter_ns()
        options = rank(self.view, ask, state, when, plan=use_plan)
        options = self.prompts.arrange(options, ask, job, load, use_plan) if use_plan is not None else options
        if self.policy == "round_robin" and options:
            self.rr = (self.rr + 1) % len(options)
            options = rotate(options, self.rr)
        self.decision_ns.append(time.perf_counter_ns() - started)
        minute = minute_of(now_s)
        for option in options:
            if job.work_class == "training" or self.book.fits(option.region.id, minute, option.charge.tokens):
                voucher = option.voucher.id if option.voucher else None
                self.book_job(job, option.region.id, option.offer, voucher, rel, option.charge.tokens)
                return
        if job.work_class == "interactive" or not options:
            if not (self.policy == "optimizer" and self._make_room(job, rel, now_s, options)):
                self.reject(job)
            return
        # Batch under a policy that never defers for price still waits for room.
        self._first_room(job, rel, now_s)

    def _first_room(self, job: Job, rel: float, now_s: float) -> None:
        found = first_room(self.view, job, now_s, self.book, self.balances, self.shocks.blocked, self._ask)
        if found is None:
            self.reject(job)
        else:
            self._book_placed(job, rel, now_s, found)


def _solve(snapshot: Snapshot, limit_s: float | None, spread: tuple[float, ...]) -> Plan:
    # the re-plan worker's job: solve, then lay out the chooser's prices, as the live one does
    fresh = plan(snapshot, time_limit_s=limit_s, demand_scenarios=spread)
    prepare_prices(snapshot.config, fresh)
    return fresh


def replay(config: Config, trace: Trace, policy: str) -> Replay:
    """Replay ``trace`` under ``policy`` (one of ``POLICIES``)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return Engine(config, trace, policy).run()
