"""Hindsight's rounding of interactive requests: each clock minute's requests, whole, to regions.

The hindsight LP splits a minute's interactive requests across regions in fractions; a
replay must send each request whole to one region and payment, within every region's
per-minute ``tpm``/``rpm``. Taking requests in arrival order, each to the cheapest region
with room, fills the cheapest region with whichever requests come first; when its room
binds, *which* requests it takes matters (a knapsack). So each minute is solved on its
own: a greedy assignment (requests with most to lose first), kept when every request got
its cheapest option, else improved by CP-SAT seeded with it.

A voucher option costs its cash plus the plan's shadow price per unit drawn, paced: whole
requests cannot fill a minute's room exactly as the LP's fractions do, the overflow lands
on vouchers, and a voucher drawn faster than the LP's own split would draw it is worth
more to the rest of the day than its shadow price (and less when drawn slower), so its
price is scaled by (balance the LP would have left) / (balance left), within a factor
``_PACE``. Among options of equal score the one the LP takes for the request's demand
group wins (``_LP_TIE``): the LP's split of a group is exactly the tie the price leaves.

CP-SAT runs on one worker with a fixed seed and a deterministic work limit (its own
measure, not the clock) per minute and in all, so a replay gives the same answer every
time. Requests no region has room for are rejected (``None``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from suanli.config import Config, Offer
from suanli.optimizer.affinity import Conversations
from suanli.optimizer.choose import VOUCHER_TIE
from suanli.optimizer.hindsight import group_key
from suanli.optimizer.index import index_for
from suanli.optimizer.payment import list_cost_yuan, request_tokens, voucher_pays
from suanli.optimizer.plan import UNSERVED_YUAN
from suanli.optimizer.snapshot import Job, Placement

__all__ = ["round_interactive"]

# of a voucher's (paced) shadow price per unit: ties within ``choose.VOUCHER_TIE`` spend it
_VOUCHER_WEIGHT = 1 - VOUCHER_TIE
_MINUTE_WORK = 0.5  # CP-SAT deterministic time per minute
_TOTAL_WORK = 30.0  # and over the whole replay, after which the greedy answer stands
_SCALE = 1e9  # yuan -> integer units of the CP-SAT objective
_PACE = 2.0  # a voucher's price moves at most this factor either way with its pace
_LP_TIE = 1e-4  # share of its cost an option is cheaper by for the LP's taking it: ties go its way


@dataclass(frozen=True, slots=True)
class _Choice:
    region: str
    offer: Offer
    voucher: str | None
    tokens: int
    units: float  # voucher units drawn
    score: float  # cash + weighted voucher value


def round_interactive(
    config: Config,
    jobs: Sequence[Job],
    *,
    used: Callable[[str, int], tuple[float, float]],
    voucher_price: Mapping[str, float],
    balances: Mapping[str, float],
    shares: Mapping[tuple[str, str, str, int, int], Mapping[tuple[str, str | None], float]] | None = None,
    conversations: Conversations | None = None,
) -> dict[int, Placement | None]:
    """Job index -> placement (None: rejected) of every interactive job of ``jobs``.

    ``used(region, minute)`` is what is already committed there (model tokens, requests);
    ``balances`` the voucher units the requests may draw, in minute order; ``shares`` the
    LP's split of each demand group (``hindsight.minute_shares``), which breaks ties;
    ``conversations`` prices a session's turn with its cache hit and its later turns' cost.
    """
    index = index_for(config)
    limits = {r.id: (r.limits.tpm or float("inf"), r.limits.rpm or float("inf")) for r in config.regions}
    by_minute: dict[int, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.work_class == "interactive":
            by_minute[int(job.arrival_s // 60.0)].append(job)
    left = dict(balances)
    planned = dict.fromkeys(left, 0.0)  # voucher -> units the LP's split would have drawn so far
    budget = [_TOTAL_WORK]
    out: dict[int, Placement | None] = {}
    for minute in sorted(by_minute):
        group = by_minute[minute]
        room = {}
        for rid, (tpm, rpm) in limits.items():
            tokens, requests = used(rid, minute)
            room[rid] = [tpm - tokens, rpm - requests]
        prices = _paced(voucher_price, balances, planned, left)
        lps = [_shares_of(job, shares) for job in group]
        options = [
            _options(config, index, job, left, prices, lp, conversations, out)
            for job, lp in zip(group, lps, strict=True)
        ]
        for opts, lp in zip(options, lps, strict=True):
            for choice in opts:
                if choice.voucher is not None:
                    planned[choice.voucher] += lp.get((choice.region, choice.voucher), 0.0) * choice.units
        picks = _greedy(options, room, left)
        if not _all_best(options, picks):
            picks = _solve(options, room, left, picks, budget)
        for job, opts, pick in zip(group, options, picks, strict=True):
            if pick is None:
                out[job.index] = None
                continue
            choice = opts[pick]
            # an interactive request starts when it arrives
            out[job.index] = Placement(
                choice.region, choice.offer, job.arrival_s, choice.voucher, choice.tokens
            )
            if choice.voucher is not None:
                left[choice.voucher] = max(left[choice.voucher] - choice.units, 0.0)
    return out


def _paced(
    price: Mapping[str, float],
    balances: Mapping[str, float],
    planned: Mapping[str, float],
    left: Mapping[str, float],
) -> dict[str, float]:
    # A voucher drawn faster than the LP's split draws it is worth more than its shadow
    # price to what is left (whole requests overflow full rooms onto vouchers), and less
    # when drawn slower: scale the price by the balance the LP would have left over the
    # balance left, within [1/_PACE, _PACE].
    out = {}
    for vid, lam in price.items():
        have = left.get(vid, 0.0)
        should = balances.get(vid, 0.0) - planned.get(vid, 0.0)
        ratio = should / have if have > 0 else _PACE
        out[vid] = lam * min(max(ratio, 1.0 / _PACE), _PACE)
    return out


def _shares_of(job: Job, shares: Mapping | None) -> Mapping[tuple[str, str | None], float]:  # noqa: ANN401
    if not shares:
        return {}
    return shares.get(group_key(job, (), by_minute_until_s=math.inf), {})


def _options(
    config: Config,
    index,  # noqa: ANN001
    job: Job,
    left: Mapping[str, float],
    voucher_price: Mapping[str, float],
    lp: Mapping[tuple[str, str | None], float],
    talks: Conversations | None = None,
    placed: Mapping[int, Placement | None] | None = None,
) -> list[_Choice]:
    # every (region, payment) the request may take, cheapest first
    out: list[_Choice] = []
    for cand in index.candidates(job.model, "interactive", job.origin, "chat", prior_latency=True):
        offer = cand.offer
        factor = index.factor(offer, job.arrival_s)
        hit = talks.cached_at(job, cand.region_id, offer, placed or {}) if talks else 0.0
        cost = list_cost_yuan(
            offer, job.input_tokens, job.output_tokens, "interactive", factor=factor, cached=hit
        )
        tokens = request_tokens(offer, job.input_tokens, job.output_tokens, "interactive")
        bonus = _LP_TIE * cost
        later = talks.later(job, cand.region_id) if talks else 0.0  # a conversation's turns after this one
        score = cost + later - bonus * lp.get((cand.region_id, None), 0.0)
        out.append(_Choice(cand.region_id, offer, None, tokens, 0.0, score))
        for info in cand.vouchers:
            balance = left.get(info.id, 0.0)
            if balance <= 0 or not info.from_s <= job.arrival_s < info.to_s:
                continue
            units, covered = voucher_pays(info.voucher, balance, tokens=tokens, cost_yuan=cost)
            if units <= 0:
                continue
            score = cost - covered + _VOUCHER_WEIGHT * voucher_price.get(info.id, 0.0) * units + later
            score -= bonus * lp.get((cand.region_id, info.id), 0.0)
            out.append(_Choice(cand.region_id, offer, info.id, tokens, units, score))
    out.sort(key=lambda c: c.score)
    return out


def _fits(choice: _Choice, room: Mapping[str, list[float]], left: Mapping[str, float]) -> bool:
    space = room[choice.region]
    if space[0] < choice.tokens or space[1] < 1:
        return False
    return choice.voucher is None or left[choice.voucher] > 0


def _greedy(
    options: list[list[_Choice]], room: Mapping[str, list[float]], balances: Mapping[str, float]
) -> list[int | None]:
    # Requests with most to lose if their cheapest option is taken go first.
    room = {rid: list(space) for rid, space in room.items()}
    left = dict(balances)

    def regret(n: int) -> float:
        opts = options[n]
        if not opts:
            return -1.0
        second = next((c.score for c in opts if c.region != opts[0].region), UNSERVED_YUAN)
        return second - opts[0].score

    picks: list[int | None] = [None] * len(options)
    for n in sorted(range(len(options)), key=lambda n: (-regret(n), n)):
        for k, choice in enumerate(options[n]):
            if _fits(choice, room, left):
                picks[n] = k
                room[choice.region][0] -= choice.tokens
                room[choice.region][1] -= 1
                if choice.voucher is not None:
                    left[choice.voucher] -= choice.units
                break
    return picks


def _all_best(options: list[list[_Choice]], picks: list[int | None]) -> bool:
    # every request has its cheapest option: nothing to improve
    return all(pick == 0 or not opts for opts, pick in zip(options, picks, strict=True))


def _solve(
    options: list[list[_Choice]],
    room: Mapping[str, list[float]],
    left: Mapping[str, float],
    seed: list[int | None],
    budget: list[float],
) -> list[int | None]:
    if budget[0] <= 0:
        return seed
    from ortools.sat.python import cp_model  # lazy: only minutes whose room binds need it

    model = cp_model.CpModel()
    take: list[list] = []
    tokens_at: dict[str, list] = defaultdict(list)
    count_at: dict[str, list] = defaultdict(list)
    units_of: dict[str, list] = defaultdict(list)
    objective = []
    for n, opts in enumerate(options):
        row = []
        for k, choice in enumerate(opts):
            var = model.new_bool_var(f"x{n}_{k}")
            row.append(var)
            tokens_at[choice.region].append((choice.tokens, var))
            count_at[choice.region].append(var)
            if choice.voucher is not None:
                units_of[choice.voucher].append((choice.units, var))
            objective.append((round((choice.score - UNSERVED_YUAN) * _SCALE), var))
            model.add_hint(var, seed[n] == k)
        if row:
            model.add_at_most_one(row)
        take.append(row)
    for rid, terms in tokens_at.items():
        space = room[rid]
        if space[0] < sum(t for t, _ in terms):
            model.add(sum(t * v for t, v in terms) <= int(max(space[0], 0)))
        if space[1] < len(count_at[rid]):
            model.add(sum(count_at[rid]) <= int(max(space[1], 0)))
    for vid, terms in units_of.items():
        # a voucher's last units: at most one request may run it dry (it pays the rest in cash)
        if sum(u for u, _ in terms) > left[vid]:
            scale = 1e6 / max(u for u, _ in terms)
            model.add(
                sum(round(u * scale) * v for u, v in terms) <= round(left[vid] * scale) + round(1e6)
            )
    model.minimize(sum(c * v for c, v in objective))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = min(_MINUTE_WORK, budget[0])
    status = solver.solve(model)
    budget[0] -= solver.response_proto.deterministic_time
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return seed
    picks: list[int | None] = []
    for row in take:
        chosen = [k for k, var in enumerate(row) if solver.boolean_value(var)]
        picks.append(chosen[0] if chosen else None)
    if _cost(options, picks) > _cost(options, seed):
        return seed
    return picks


def _cost(options: list[list[_Choice]], picks: list[int | None]) -> float:
    return sum(
        UNSERVED_YUAN if pick is None else opts[pick].score for opts, pick in zip(options, picks, strict=True)
    )
