"""Placing a few training jobs together: an exact search over their (region, start, payment).

Training jobs are few and large, and each is indivisible: where the LP sends 0.9 of one
job to a tokens voucher and the rest to an off-peak region, a replay must pick one. With
at most ``MAX_JOBS`` jobs every combination of (region, start, payment) is searched,
branch and bound; voucher balances are drawn in start order as the replay draws them.
Training uses no tpm/rpm, so the jobs interact only through the vouchers.

Hindsight places the whole trace's jobs at once (``place_training``). The online policy
(``assign_training``) places the jobs it knows of, the new one and those booked but not
started, each from now on; a voucher only training may use is worth what the training jobs
that may still come would save with it before it expires (``optimizer.prospects``): each
such prospect is a job in the search too, its cash weighted by the chance it comes and
averaged over the sizes it may have.

A job's starts worth trying are its arrival, the first minute of each off-peak window and
the start of each voucher's validity inside its window (price and payment are otherwise
constant in between, and earlier is never worse).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from suanli.config import Config, Voucher
from suanli.optimizer.choose import VOUCHER_TIE
from suanli.optimizer.index import index_for
from suanli.optimizer.payment import list_cost_yuan, request_tokens, voucher_pays
from suanli.optimizer.prospects import Prospect, mean_factor
from suanli.optimizer.snapshot import Job, Placement

__all__ = ["MAX_JOBS", "assign_training", "hold_start", "place_training", "training_only"]

MAX_JOBS = 8
_MAX_LEAVES = 200_000  # combinations scored at most; the best so far stands after that
_Size = tuple[int, float, float]  # a prospect's size: model tokens, list yuan here, its cash elsewhere


@dataclass(frozen=True, slots=True)
class _Option:
    placement: Placement
    cost: float  # list yuan
    floor: float  # least value the option can have (its voucher at full balance)
    # A prospect's option is worth ``offset + weight x`` (its cash after the voucher): it
    # comes in time for the voucher with chance ``weight``, and ``offset`` is its cash
    # times the chance it comes too late for it. A known job's: 0 and 1.
    offset: float = 0.0
    weight: float = 1.0
    # A prospect on a voucher: per size it may have, equally likely, (model tokens, list
    # yuan here, its cash elsewhere). Each size takes the voucher where that is cheaper
    # than its cash with what is left, as the job would when it comes, and draws its share.
    sizes: tuple[_Size, ...] = ()


def place_training(
    config: Config,
    jobs: Sequence[Job],
    *,
    balances: Mapping[str, float],
    voucher_price: Mapping[str, float],
) -> dict[int, Placement | None] | None:
    """Job index -> placement (None: no region can train it) of the training jobs of ``jobs``.

    None when there are more than ``MAX_JOBS`` of them (the caller places them one by one).
    The objective is cash plus, for vouchers other classes may use too, their shadow price
    per unit drawn (a unit training takes is one the rest of the trace cannot).
    """
    training = [job for job in jobs if job.work_class == "training"]
    if len(training) > MAX_JOBS:
        return None
    if not training:
        return {}
    shared = _shared_prices(config, voucher_price)
    options = [_options(config, job, balances) for job in training]
    picks = _search(config, options, [0] * len(training), balances, shared)
    return {job.index: (pick.placement if pick else None) for job, pick in zip(training, picks, strict=True)}


def assign_training(
    config: Config,
    jobs: Sequence[Job],
    *,
    now_s: float,
    balances: Mapping[str, float],
    voucher_price: Mapping[str, float],
    prospects: Sequence[Prospect] = (),
) -> dict[int, Placement | None] | None:
    """Job index -> placement of the training ``jobs``, each starting at ``now_s`` or later.

    As ``place_training``, and the ``prospects`` (at most ``MAX_JOBS`` in all with the
    jobs; the likeliest kept) draw what the jobs leave of the vouchers only training may
    use, each saving its chance times what it would save with it. Those vouchers carry no
    shadow price here: the prospects are what they are kept for. None with too many jobs.
    """
    if len(jobs) > MAX_JOBS:
        return None
    if not jobs:
        return {}
    # a voucher priced at just what it saves wins the tie, as in the deferral scheduler
    shared = {vid: price * (1 - VOUCHER_TIE) for vid, price in _shared_prices(config, voucher_price).items()}
    kept = sorted(prospects, key=lambda p: -p.chance)[: MAX_JOBS - len(jobs)]
    # a booked job may move from now on
    later = [dataclasses.replace(job, arrival_s=max(job.arrival_s, now_s)) for job in jobs]
    options = [_undominated(_options(config, job, balances)) for job in later]
    options += [_prospect_options(config, prospect, shared, now_s) for prospect in kept]
    ranks = [0] * len(jobs) + [1] * len(kept)  # prospects draw after every known job
    picks = _search(config, options, ranks, balances, shared)
    return {job.index: (pick.placement if pick else None) for job, pick in zip(jobs, picks, strict=False)}


def hold_start(config: Config, job: Job, placed: Placement, *, until_s: float) -> Placement:
    """``placed`` started as late as it costs the same, no later than ``until_s``.

    A training job on a voucher that starts later keeps the voucher open to a job that
    arrives meanwhile and saves more with it (``assign_training`` is asked again then);
    started now, it is spent. The start moves within the job's window and the voucher's
    validity, to the latest minute with the same time-of-use factor. A job on cash starts
    as placed.
    """
    if placed.voucher is None:
        return placed
    index = index_for(config)
    info = index.vouchers[placed.voucher]
    last = min(job.latest_s, info.to_s - 60.0, until_s)
    if last <= placed.start_s:
        return placed
    factor = index.factor(placed.offer, placed.start_s)
    # on a whole minute: seconds after a trace's start, a start at the window's very end
    # could come out a rounding past it
    t = math.floor(last / 60.0) * 60.0
    while t > placed.start_s:
        if index.factor(placed.offer, t) == factor:
            return Placement(placed.region, placed.offer, t, placed.voucher, placed.tokens)
        t -= 60.0  # the minute before: factors change on whole minutes
    return placed


def training_only(config: Config) -> frozenset[str]:
    """Ids of the vouchers only training may use (``classes: [training]``)."""
    return frozenset(v.id for v in config.vouchers if set(v.classes or ()) == {"training"})


def _shared_prices(config: Config, voucher_price: Mapping[str, float]) -> dict[str, float]:
    # voucher id -> shadow price, for the vouchers other classes may use too
    only = training_only(config)
    return {v.id: voucher_price.get(v.id, 0.0) for v in config.vouchers if v.id not in only}


def _search(
    config: Config,
    options: list[list[_Option]],
    ranks: list[int],
    balances: Mapping[str, float],
    shared: Mapping[str, float],
) -> list[_Option | None]:
    # The least-valued choice of one option per item, branch and bound on the options'
    # floors. Items draw the vouchers by (rank, start, item).
    vouchers = {v.id: v for v in config.vouchers}
    order = sorted(range(len(options)), key=lambda n: len(options[n]))
    floors = [min((o.floor for o in options[n]), default=0.0) for n in order]
    rest = [sum(floors[k:]) for k in range(len(order) + 1)]
    best: list = [math.inf, None]
    leaves = [0]
    chosen: list[_Option | None] = [None] * len(options)

    def score() -> float:
        left = dict(balances)
        total = 0.0
        picked = [(ranks[n], o.placement.start_s, n, o) for n, o in enumerate(chosen) if o is not None]
        for _, _, _, option in sorted(picked, key=lambda item: item[:3]):
            placed = option.placement
            cash = option.cost
            if option.sizes:
                cash = _spread_cash(vouchers[placed.voucher], option.sizes, left)  # type: ignore[index]
            elif placed.voucher is not None:
                balance = left.get(placed.voucher, 0.0)
                voucher = vouchers[placed.voucher]
                units, covered = voucher_pays(voucher, balance, tokens=placed.tokens, cost_yuan=cash)
                left[placed.voucher] = balance - units
                cash = max(cash - covered, 0.0) + shared.get(placed.voucher, 0.0) * units
            total += option.offset + option.weight * cash
        return total

    def search(depth: int, floor_so_far: float) -> None:
        if leaves[0] >= _MAX_LEAVES or floor_so_far + rest[depth] >= best[0]:
            return
        if depth == len(order):
            leaves[0] += 1
            value = score()
            if value < best[0]:
                best[0], best[1] = value, list(chosen)
            return
        n = order[depth]
        if not options[n]:
            search(depth + 1, floor_so_far)
            return
        for option in options[n]:
            chosen[n] = option
            search(depth + 1, floor_so_far + option.floor)
        chosen[n] = None

    search(0, 0.0)
    return best[1] if best[1] is not None else [None] * len(options)


def _options(config: Config, job: Job, balances: Mapping[str, float]) -> list[_Option]:
    # every (region, start, payment) worth trying for ``job``, cheapest floor first
    index = index_for(config)
    out: dict[tuple[str, str | None, float], _Option] = {}
    first = math.ceil(job.arrival_s / 60.0)
    last = math.floor(job.latest_s / 60.0)
    for cand in index.candidates(job.model, "training", job.origin, "chat", prior_latency=True):
        starts = {job.arrival_s}
        if cand.timed:
            # the first minute of each cheaper time-of-use band
            was = index.factor(cand.offer, job.arrival_s)
            for minute in range(first, last + 1):
                now = index.factor(cand.offer, minute * 60.0)
                if now < was:
                    starts.add(minute * 60.0)
                was = now
        for info in cand.vouchers:
            if job.arrival_s < info.from_s <= job.latest_s:
                starts.add(info.from_s)
        tokens = request_tokens(cand.offer, job.input_tokens, 0.0, "training")
        for start in sorted(starts):
            off = index.factor(cand.offer, start)
            cost = list_cost_yuan(cand.offer, job.input_tokens, 0.0, "training", factor=off)
            payments: list[tuple[str | None, float]] = [(None, cost)]
            for info in cand.vouchers:
                balance = balances.get(info.id, 0.0)
                if balance > 0 and info.from_s <= start < info.to_s:
                    _, covered = voucher_pays(info.voucher, balance, tokens=tokens, cost_yuan=cost)
                    payments.append((info.id, max(cost - covered, 0.0)))
            for voucher, floor in payments:
                key = (cand.region_id, voucher, off)
                if key not in out:  # starts are in order: the earliest of a kind is kept
                    placement = Placement(cand.region_id, cand.offer, start, voucher, tokens)
                    out[key] = _Option(placement, cost, floor)
    return sorted(out.values(), key=lambda o: (o.floor, o.placement.start_s, o.placement.region))


def _undominated(options: list[_Option]) -> list[_Option]:
    # A job's cheapest cash option, and its cheapest on each voucher: cash options touch no
    # balance, and a dearer option on the same voucher draws as much or more of it. (Only
    # the order the jobs on one voucher draw in may differ: a small price for a search
    # small enough to run on every training arrival.)
    best: dict[str | None, _Option] = {}
    for option in options:  # cheapest floor first, then earliest
        voucher = option.placement.voucher
        if voucher not in best or option.cost < best[voucher].cost:
            best[voucher] = option
    return sorted(best.values(), key=lambda o: (o.floor, o.placement.start_s, o.placement.region))


def _prospect_options(
    config: Config, prospect: Prospect, shared: Mapping[str, float], now_s: float
) -> list[_Option]:
    # A prospect's cash (its cheapest region at the factor it may expect) or, for each
    # voucher only training may use that it may come in time for, that voucher where it pays.
    index = index_for(config)
    job = prospect.job
    cands = index.candidates(job.model, "training", job.origin, "chat", prior_latency=True)
    priced = []
    for cand in cands:
        factor = mean_factor(index, cand.offer, prospect)
        cost = list_cost_yuan(cand.offer, job.input_tokens, 0.0, "training", factor=factor)
        priced.append((cost, cand))
    if not priced:
        return []
    cash, best = min(priced, key=lambda item: (item[0], item[1].region_id))
    tokens = request_tokens(best.offer, job.input_tokens, 0.0, "training")
    on_cash = Placement(best.region_id, best.offer, now_s, None, tokens)
    out = [_Option(on_cash, cash, prospect.chance * cash, 0.0, prospect.chance)]
    inputs = prospect.sizes or (job.input_tokens,)
    for cost, cand in priced:
        tokens = request_tokens(cand.offer, job.input_tokens, 0.0, "training")
        # list cost is linear in the tokens: each size's here and its cash elsewhere
        share = [n / job.input_tokens if job.input_tokens else 1.0 for n in inputs]
        sizes = tuple(
            (request_tokens(cand.offer, n, 0.0, "training"), cost * f, cash * f)
            for n, f in zip(inputs, share, strict=True)
        )
        for info in cand.vouchers:
            chance = min(prospect.by_voucher.get(info.id, 0.0), prospect.chance)
            if info.id in shared or chance <= 0:
                continue
            offset = (prospect.chance - chance) * cash
            floor = offset + chance * _spread_cash(info.voucher, sizes, {info.id: math.inf})
            if floor >= prospect.chance * cash:
                continue  # never cheaper than its cash
            placement = Placement(cand.region_id, cand.offer, max(now_s, info.from_s), info.id, tokens)
            out.append(_Option(placement, cost, floor, offset, chance, sizes))
    return sorted(out, key=lambda o: (o.floor, o.placement.region))


def _spread_cash(voucher: Voucher, sizes: tuple[_Size, ...], left: dict[str, float]) -> float:
    # A prospect's mean cash over its sizes with what is left of ``voucher``, each size on it
    # only where that beats its cash elsewhere; the mean units those draw leave ``left``.
    balance = left.get(voucher.id, 0.0)
    cash = units = 0.0
    for tokens, cost, elsewhere in sizes:
        drawn, covered = voucher_pays(voucher, balance, tokens=tokens, cost_yuan=cost)
        here = max(cost - covered, 0.0)
        if here < elsewhere:
            cash, units = cash + here, units + drawn
        else:
            cash += elsewhere
    left[voucher.id] = balance - units / len(sizes)
    return cash / len(sizes)
