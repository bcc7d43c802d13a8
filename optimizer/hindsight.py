"""Hindsight: the planner over a whole known trace, the yardstick every policy is held to.

``known_demand`` groups the known jobs by (class, origin, model, arrival slot, output
share); a group's start window is the union of its jobs' windows. The output share
matters because a ``tokens`` voucher is worth the yuan per token of the request it pays
for, and output tokens cost several times input ones: narrow shares keep the averaged
prices close to each request's. They are still averages, so the LP's value is not a
bound (a policy picks which whole requests a voucher or a region's room serves):
``hindsight_bound`` is, see ``optimizer.bound``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from suanli.config import Config
from suanli.optimizer.bound import lagrangian_bound
from suanli.optimizer.bound_cache import best_voucher_prices
from suanli.optimizer.bound_events import Cut, Window
from suanli.optimizer.packages import expand_packages
from suanli.optimizer.plan import NO_LIMIT, plan
from suanli.optimizer.slots import slot_edges, slot_index
from suanli.optimizer.snapshot import Demand, Job, Plan, Snapshot

__all__ = [
    "cacheable",
    "group_key",
    "hindsight_bound",
    "hindsight_plan",
    "known_demand",
    "minute_shares",
    "output_bucket",
]


def output_bucket(input_tokens: float, output_tokens: float, buckets: int) -> int:
    """Which of ``buckets`` equal bands of output share (output / all tokens) a request is in."""
    total = input_tokens + output_tokens
    share = output_tokens / total if total > 0 else 0.0
    return min(int(share * buckets), buckets - 1)


def group_key(
    job: Job, edges: Sequence[float], *, mix_buckets: int = 10, by_minute_until_s: float = -math.inf
) -> tuple[str, str, str, int, int]:
    """The demand group of ``known_demand`` that ``job`` falls in."""
    band = output_bucket(job.input_tokens, job.output_tokens, mix_buckets)
    if job.work_class == "interactive" and job.arrival_s < by_minute_until_s:
        when = -1 - math.floor(job.arrival_s / 60.0)  # negative: never a slot index
    else:
        when = slot_index(edges, job.arrival_s)
    return (job.work_class, job.origin, job.model, when, band)


def known_demand(
    jobs: Sequence[Job],
    edges: Sequence[float],
    *,
    mix_buckets: int = 10,
    by_minute_until_s: float = -math.inf,
) -> tuple[Demand, ...]:
    """Demand groups of ``jobs``, one per (class, origin, model, arrival slot, output share band).

    Interactive jobs arriving before ``by_minute_until_s`` are grouped per clock minute
    instead of per slot, so the plan holds them to each minute's limits (a tighter bound,
    a bigger LP).
    """
    # (class, origin, model, slot or minute, band) -> [requests, input, output, earliest, latest, cached]
    # (a session's cached tokens count as hits wherever they run: the plan, like the bound, is optimistic)
    groups: dict[tuple[str, str, str, int, int], list[float]] = {}
    for job in jobs:
        key = group_key(job, edges, mix_buckets=mix_buckets, by_minute_until_s=by_minute_until_s)
        acc = groups.get(key)
        if acc is None:
            groups[key] = [1.0, job.input_tokens, job.output_tokens, job.arrival_s, job.latest_s, job.cached]
            continue
        acc[0] += 1
        acc[1] += job.input_tokens
        acc[2] += job.output_tokens
        acc[3] = min(acc[3], job.arrival_s)
        acc[4] = max(acc[4], job.latest_s)
        acc[5] += job.cached
    return tuple(
        Demand(
            work_class=key[0],  # type: ignore[arg-type]
            origin=key[1],  # type: ignore[arg-type]
            model=key[2],
            earliest=acc[3],
            latest=acc[4],
            requests=acc[0],
            input_tokens=acc[1],
            output_tokens=acc[2],
            cached_tokens=acc[5],
        )
        for key, acc in groups.items()
    )


def cacheable(config: Config, jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` with ``cached`` kept only where a prompt-cache hit is possible at all.

    A hit needs another request of the session to start at most ``cache_ttl_s`` (the longest
    of the model's offers) before, or with, this one: some start in its window must lie that
    close before some start in this one's. Where none can, no policy pays ``cached_input``;
    elsewhere the plan and the bound price the cached tokens as a hit (optimistic, as a
    bound must be).
    """
    ttl = {}
    for region in config.regions:
        for offer in region.models:
            ttl[offer.name] = max(ttl.get(offer.name, 0.0), offer.cache_ttl_s)
    sessions: dict[str, list[Job]] = {}
    for job in jobs:
        if job.session is not None:
            sessions.setdefault(job.session, []).append(job)
    out = []
    for job in jobs:
        if job.cached > 0:
            reach = ttl.get(job.model, 0.0)
            near = any(
                o is not job and o.arrival_s <= job.latest_s and job.arrival_s - o.latest_s <= reach
                for o in sessions.get(job.session or "", ())
            )
            if not near:
                job = dataclasses.replace(job, cached=0.0)
        out.append(job)
    return out


def _span(config: Config, jobs: Sequence[Job]) -> tuple[float, float, tuple[float, ...]]:
    start = min(job.arrival_s for job in jobs)
    end = max(job.latest_s for job in jobs) + 1.0
    return start, end, tuple(slot_edges(config, start, end))


def _groups(
    jobs: Sequence[Job], edges: Sequence[float], until_s: float
) -> tuple[list[tuple[str, str, str, int, int]], list[int]]:
    # known_demand's groups in its order (first seen), and each job's index among them
    of_job = [group_key(job, edges, by_minute_until_s=until_s) for job in jobs]
    order = {key: n for n, key in enumerate(dict.fromkeys(of_job))}
    return list(order), [order[key] for key in of_job]


def minute_shares(
    config: Config, jobs: Sequence[Job], plan: Plan
) -> dict[tuple[str, str, str, int, int], dict[tuple[str, str | None], float]]:
    """Per demand group of ``hindsight_plan(..., by_minute=True)``: (region, voucher) -> share.

    The groups are keyed as ``group_key`` keys them; ``plan`` must be that plan.
    """
    _, _, edges = _span(config, jobs)
    keys, _ = _groups(jobs, edges, math.inf)
    if len(keys) != len(plan.demand):
        return {}  # not the plan of these jobs
    out: dict[tuple[str, str, str, int, int], dict[tuple[str, str | None], float]] = {}
    for flow in plan.flows:
        shares = out.setdefault(keys[flow.demand], {})
        where = (flow.region, flow.voucher)
        shares[where] = shares.get(where, 0.0) + flow.share
    return out


def hindsight_plan(
    config: Config,
    jobs: Sequence[Job],
    *,
    balances: Mapping[str, float] | None = None,
    by_minute: bool = False,
) -> Plan:
    """The plan with every job known, over the whole span the jobs may start in.

    Packages and capped vouchers are planned per instance (``packages.expand_packages``): the
    plan's voucher prices and flows name instances (``packages.fold_packages`` names them
    by voucher) and are what ``hindsight_bound`` reads.
    """
    start, end, edges = _span(config, jobs)
    jobs = cacheable(config, jobs)
    demand = known_demand(jobs, edges, by_minute_until_s=math.inf if by_minute else -math.inf)
    have = dict(balances) if balances is not None else {v.id: v.amount for v in config.vouchers}
    config, have = expand_packages(config, start, end, have)
    snapshot = Snapshot(config=config, now_s=start, horizon_s=end - start, balances=have, demand=demand)
    # no wall clock decides hindsight's plan: the bound and every replay hang on it
    return plan(snapshot, time_limit_s=NO_LIMIT, demand_scenarios=())


def hindsight_bound(
    config: Config,
    jobs: Sequence[Job],
    found: Plan,
    *,
    balances: Mapping[str, float] | None = None,
    by_minute: bool = False,
    windows: Sequence[Window] = (),
    cuts: Mapping[str, Cut] | None = None,
) -> float:
    """A lower bound on the cash of any decisions for ``jobs`` (``found``: their hindsight plan).

    ``found.cash_yuan`` is not one: see ``optimizer.bound``. ``windows``: the day's outages
    and price spikes, which no policy escapes but by going elsewhere; ``cuts`` voucher id ->
    one cut of it, whose row is tried in place of the voucher's own (``bound_events``).
    """
    start, end, edges = _span(config, jobs)
    jobs = cacheable(config, jobs)
    _, groups = _groups(jobs, edges, math.inf if by_minute else -math.inf)
    have = dict(balances) if balances is not None else {v.id: v.amount for v in config.vouchers}
    config, have = expand_packages(config, start, end, have)

    def at(prices: Plan) -> float:
        value = lagrangian_bound(config, jobs, groups, prices, now_s=start, balances=have, windows=windows)
        if not cuts:
            return value
        # either row is valid at any price: the better of the two
        with_cuts = lagrangian_bound(
            config, jobs, groups, prices, now_s=start, balances=have, windows=windows, cuts=cuts
        )
        return max(value, with_cuts)

    return best_voucher_prices(config, jobs, found, at)  # packages' periods: ``bound_cache``
