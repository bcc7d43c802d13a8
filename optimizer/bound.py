"""A lower bound on what any policy pays for known jobs, valid request by request.

The hindsight LP serves demand groups, and a group's share is priced at the group's
average figures. That is not a relaxation of serving whole requests: a policy picks
which requests of a group a ``tokens`` voucher pays for (the chatty ones, whose yuan
per token is highest) or fill a region's last room, and beats the averaged LP by a
little. So the bound is the Lagrangian dual of the per-request problem at the LP's own
prices instead: relax the voucher, (tpm), (rpm) and (minute) rows of ``optimizer.plan``
with multipliers ``lambda >= 0`` and

    L(lambda) = sum_i min(M, min_j [ c_ij + lambda . a_ij ]) - lambda . b

where ``j`` runs over the group's columns (region, slot, payment), ``c_ij``/``a_ij`` are
request i's own cash and row coefficients (linear in its input and output tokens) and
``b`` the rows' right-hand sides. By weak duality every ``L(lambda)`` with
``lambda >= 0`` is at most the cost (cash plus ``M`` per unserved request) of any
feasible set of decisions, whatever the duals' accuracy; at the LP's duals it is at most
the LP's value, and falls short of it only by the grouping's own error. A clock
minute's interactive requests meet no other minute's (minute) rows, so those rows'
prices are improved minute by minute with a few line searches (L is concave in them).

A request's real draw on a ``tokens`` voucher and on a region's tpm is its model tokens
rounded up (the ledger's); the LP's are the exact product, no more: still a relaxation.

Two things keep it from being loose where requests are large (fine-tuning jobs of a
million tokens): the inner minimum is over each request's own choices, and one request
never draws more than a voucher's whole balance, so a column that would is priced as
the part it can cover plus cash for the rest (``_capped``); and the rows of vouchers only
training jobs use are not relaxed at all: ``optimizer.bound_training``. A request's columns
are only those in slots of its own start window, not of its group's (``_own_window``).

A day's trace events (``optimizer.bound_events``): a column inside an outage for every start
the request may take there is not available, a price spike multiplies its cash, and a
voucher cut's row may stand in for the voucher's own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from suanli.config import Config
from suanli.optimizer.bound_events import Cut, Window, cut_row, event_factors
from suanli.optimizer.bound_training import KeptOption, TrainingJob, training_value
from suanli.optimizer.columns import columns_of
from suanli.optimizer.plan import UNSERVED_YUAN
from suanli.optimizer.snapshot import Job, Plan, Snapshot

__all__ = ["lagrangian_bound"]

_STEPS = 12  # golden-section steps of each line search over a minute row's price


def lagrangian_bound(
    config: Config,
    jobs: Sequence[Job],
    groups: Sequence[int],
    found: Plan,
    *,
    now_s: float,
    balances: Mapping[str, float],
    windows: Sequence[Window] = (),
    cuts: Mapping[str, Cut] | None = None,
) -> float:
    """Cash that any decisions serving as many requests as ``found`` pay at least.

    ``groups[i]`` is the index in ``found.demand`` of the group ``jobs[i]`` was put in;
    ``found`` is the plan of that demand from ``now_s`` with ``balances`` and nothing booked.
    ``windows``: the day's outages and price spikes, ``cuts`` voucher id -> a cut whose row
    replaces the voucher's own (``optimizer.bound_events``).
    """
    edges = found.edges
    # Each group's columns once with one input token, once with one input and one output
    # token, once with one input token that hits the prompt cache: every coefficient is
    # linear in (input, output, cached, 1), so the three give the coefficients of a request
    # of any size (the unit input keeps the same columns). A request's cached tokens are
    # priced as a hit wherever it runs: a hit needs the session's prompt there, so that
    # is no more than any policy pays.
    probes = []
    for d in found.demand:
        unit = dataclasses.replace(d, requests=1.0, input_tokens=1.0, output_tokens=0.0, cached_tokens=0.0)
        probes.append(unit)
        probes.append(dataclasses.replace(unit, output_tokens=1.0))
        probes.append(dataclasses.replace(unit, cached_tokens=1.0))
    snapshot = Snapshot(
        config=config, now_s=now_s, horizon_s=edges[-1] - now_s, balances=dict(balances), demand=tuple(probes)
    )
    per_group: list[dict[tuple[str, int, str | None], list[float]]] = [{} for _ in found.demand]
    for col in columns_of(snapshot, edges):
        cols = per_group[col.demand // 3]
        key = (col.region, col.slot, col.voucher)
        have = cols.setdefault(key, [0.0] * 9)
        probe = col.demand % 3
        if probe < 2:
            have[3 * probe : 3 * probe + 3] = [col.cash, col.units, col.tokens]
        else:
            have[7:9] = [col.cash, col.units]
        have[6] = col.requests
    for cols in per_group:
        # A payment missing from the input probe draws nothing for input (its cost there
        # is 0); its model tokens are those of the cash column at the same place.
        for (region, slot, voucher), have in cols.items():
            if voucher is not None and have[2] == 0.0:
                have[2] = cols.get((region, slot, None), have)[2]
    members: list[list[int]] = [[] for _ in found.demand]
    chained = _chained(jobs)
    for n, g in enumerate(groups):
        members[g].append(n)
    # request -> per column: cost on a miss, a hit's saving, model tokens and requests the minute
    # rows count, the region of those rows, the serving region; and the minute (None: no minute
    # rows): a conversation's requests are priced together (``_chain_value``)
    links: dict[int, tuple] = {}

    limits = {r.id: r.limits for r in config.regions}
    kept = _kept_vouchers(found, per_group, members)
    rows_of = {}  # voucher -> (cut time, weight before it, right-hand side) of the cut's row
    for v, cut in (cuts or {}).items():
        if v not in kept and found.voucher_price.get(v, 0.0) > 0 and v in balances:
            rows_of[v] = (cut.at_s, *cut_row(cut, max(balances[v], 0.0)))
    training: list[TrainingJob] = []
    total = 0.0
    forced = 0  # requests no policy can serve: every column down
    # minute -> per group: values without the minute rows' terms, model tokens and
    # requests per (request, column), and each column's region (None: no minute row)
    by_minute: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]]] = {}
    for g, d in enumerate(found.demand):
        if not members[g]:
            continue
        minute = None
        if d.work_class == "interactive" and math.floor(d.earliest / 60.0) == math.floor(d.latest / 60.0):
            minute = math.floor(d.earliest / 60.0)
        # per column: yuan per input token, per output token, per request; tokens per
        # input and output token and requests the minute rows count
        coefs = [(0.0, 0.0, UNSERVED_YUAN, 0.0, 0.0, 0.0, 0.0)]  # unserved: M per request
        regions: list[str | None] = [None]
        served_at: list[str | None] = [None]
        is_kept = [False]
        for (region, slot, voucher), (c1, u1, t1, c2, u2, t2, req, c3, u3) in per_group[g].items():
            is_kept.append(voucher in kept)
            lam = found.voucher_price.get(voucher, 0.0) if voucher is not None else 0.0
            tok = found.token_price.get(region, ())
            rq = found.request_price.get(region, ())
            per_token = tok[slot] if tok else 0.0
            per_request = rq[slot] if rq else 0.0
            per_in = c1 + lam * u1 + per_token * t1
            per_out = (c2 - c1) + lam * (u2 - u1) + per_token * (t2 - t1)
            # (a payment missing from the cached probe draws nothing there: a hit costs 0)
            per_cached = (c3 - c1) + lam * (u3 - u1)
            counted = minute is not None and t2 > 0
            rows = (t1, t2 - t1, req) if counted else (0.0, 0.0, 0.0)
            coefs.append((per_in, per_out, per_request * req, *rows, per_cached))
            regions.append(region if counted else None)
            served_at.append(region)
        a = np.array(coefs)
        # per column: cash per input, output and cached token (what a spike multiplies)
        cash = np.array([(0.0, 0.0, 0.0)] + [(h[0], h[3] - h[0], h[7] - h[0]) for h in per_group[g].values()])
        who = [jobs[n] for n in members[g]]
        shocks = _shock_factors(windows, d.model, per_group[g], edges, who)
        if shocks is not None and shocks.shape[1] > 1:
            forced += int(np.isinf(shocks[:, 1:]).all(axis=1).sum())
        weights = _cut_weights(rows_of, per_group[g], edges, who)
        # per column: the relaxed price of its voucher units per input, output and cached token
        priced = np.zeros((len(per_group[g]) + 1, 3))
        for j, ((_, _, v), h) in enumerate(per_group[g].items(), start=1):
            lam = found.voucher_price.get(v, 0.0) if v is not None else 0.0
            priced[j] = (lam * h[1], lam * (h[4] - h[1]), lam * (h[8] - h[1]))
        for m, n in enumerate(members[g]):
            if n in chained:
                job = jobs[n]
                miss = job.input_tokens * a[:, 0] + job.output_tokens * a[:, 1] + a[:, 2]
                saving = job.cached * a[:, 6]
                if weights is not None:
                    less = weights[m] - 1.0
                    miss = miss + less * (job.input_tokens * priced[:, 0] + job.output_tokens * priced[:, 1])
                    saving = saving + less * job.cached * priced[:, 2]
                if shocks is not None:
                    paid = job.input_tokens * cash[:, 0] + job.output_tokens * cash[:, 1]
                    miss = _shocked(miss, shocks[m], paid)
                    saving = _shocked(saving, shocks[m], job.cached * cash[:, 2], down=0.0)
                tokens = job.input_tokens * a[:, 3] + job.output_tokens * a[:, 4]
                links[n] = (miss, saving, tokens, a[:, 5], regions, served_at, minute)
        alone = [n for n in members[g] if n not in chained]
        if not alone:
            continue
        ins = np.array([jobs[n].input_tokens for n in alone])
        outs = np.array([jobs[n].output_tokens for n in alone])
        cached = np.array([jobs[n].cached for n in alone])
        values = np.outer(ins, a[:, 0]) + np.outer(outs, a[:, 1]) + a[:, 2]
        if cached.any():
            values += np.outer(cached, a[:, 6])
        capped = _capped(per_group[g], ins, outs, found.voucher_price, balances)
        # a cache hit draws fewer yuan of a credit: no cap correction where one may happen
        capped[cached > 0] = 0.0
        values += capped
        rows = np.array([m for m, n in enumerate(members[g]) if n not in chained])
        if weights is not None:
            drawn = np.outer(ins, priced[:, 0]) + np.outer(outs, priced[:, 1])
            drawn += np.outer(cached, priced[:, 2])
            values += (weights[rows] - 1.0) * drawn
        if shocks is not None:
            spent = np.outer(ins, cash[:, 0]) + np.outer(outs, cash[:, 1]) + np.outer(cached, cash[:, 2])
            values = _shocked(values, shocks[rows], spent)
        values = _own_window(values, per_group[g], edges, [jobs[n] for n in alone])
        if any(is_kept):
            training += _training_jobs(per_group[g], values, np.array(is_kept), ins, outs, kept)
            continue
        if minute is None:
            total += float(values.min(axis=1).sum())
            continue
        tokens = np.outer(ins, a[:, 3]) + np.outer(outs, a[:, 4])
        by_minute.setdefault(minute, []).append((values, tokens, a[:, 5], regions))
    minutes = {m for _, m in found.minute_price} | set(by_minute)
    minutes |= {link[6] for link in links.values() if link[6] is not None}
    priced: dict[int, dict[str, tuple[float, float]]] = {}
    for minute in minutes:
        value, priced[minute] = _minute_value(by_minute.get(minute, []), minute, found, limits)
        total += value
    total += _chain_value(config, jobs, chained, links, priced)
    total += training_value(training, {v: balances.get(v, 0.0) for v in kept}, found.voucher_price)
    # the kept vouchers' rows are not relaxed: no lambda . b for them
    total += sum(found.voucher_price.get(v, 0.0) * max(balances.get(v, 0.0), 0.0) for v in kept)
    # the cut vouchers' rows: their right-hand sides instead of the balances
    total += sum(found.voucher_price[v] * (max(balances[v], 0.0) - rhs) for v, (_, _, rhs) in rows_of.items())
    # a request every column of which is down is unserved under every policy: it counts M in
    # every policy's cost as in the minimum, so it is left out as the plan's unserved are
    unserved = found.unserved_requests + forced
    return float(total - _rhs(config, found, balances) - UNSERVED_YUAN * unserved)


def _shock_factors(
    windows: Sequence[Window], model: str, cols: dict, edges: Sequence[float], members: Sequence[Job]
) -> np.ndarray | None:
    # per member x column (unserved first): ``bound_events.event_factors``
    if not windows or not members:
        return None
    places = [(region, slot) for region, slot, _ in cols]
    arrivals = np.array([job.arrival_s for job in members])
    latest = np.array([job.latest_s for job in members])
    return event_factors(windows, model, places, edges, arrivals, latest)


def _cut_weights(
    rows_of: dict, cols: dict, edges: Sequence[float], members: Sequence[Job]
) -> np.ndarray | None:
    # per member x column (unserved first): the weight of the column's voucher draw in its row
    # (1: the voucher's own row, or a start certainly from the cut on)
    if not rows_of or not members:
        return None
    out = None
    arrivals = np.array([job.arrival_s for job in members])
    for j, (_, slot, voucher) in enumerate(cols, start=1):
        row = rows_of.get(voucher)
        if row is None:
            continue
        if out is None:
            out = np.ones((len(members), len(cols) + 1))
        at, before, _ = row
        out[:, j] = np.where(np.maximum(arrivals, edges[slot]) >= at, 1.0, before)
    return out


def _shocked(
    values: np.ndarray, factors: np.ndarray, cash: np.ndarray, *, down: float = math.inf
) -> np.ndarray:
    # ``values`` with each column's ``cash`` multiplied by its factor; ``down`` where it is inf
    up = np.isfinite(factors)
    out = values + np.where(up, factors - 1.0, 0.0) * cash
    return np.where(up, out, down)


def _chained(jobs: Sequence[Job]) -> dict[int, str]:
    # request index -> its session, for conversations of interactive requests only (their
    # starts are their arrivals, so which one precedes which is known) with a cached prefix
    sessions: dict[str, list[Job]] = {}
    for job in jobs:
        if job.session is not None:
            sessions.setdefault(job.session, []).append(job)
    out: dict[int, str] = {}
    for n, job in enumerate(jobs):
        talk = sessions.get(job.session or "", ())
        interactive = all(j.work_class == "interactive" for j in talk)
        if len(talk) > 1 and interactive and any(j.cached > 0 for j in talk):
            out[n] = job.session or ""
    return out


def _chain_value(config: Config, jobs: Sequence[Job], chained: dict[int, str], links, priced) -> float:  # noqa: ANN001
    """The least a conversation's requests cost together at the relaxed rows' prices.

    A request's cached input pays ``cached_input`` only where its session's previous *served*
    request started at the same region and model within the TTL (DESIGN.md): a shortest path
    over the conversation in start order (ties: trace order), the state being where and when
    the last served request started. Unserved keeps the state and costs ``M``.
    """
    ttl = {(r.id, o.name): o.cache_ttl_s for r in config.regions for o in r.models}
    sessions: dict[str, list[int]] = {}
    for n in sorted(chained, key=lambda n: (jobs[n].arrival_s, n)):
        sessions.setdefault(chained[n], []).append(n)
    total = 0.0
    for talk in sessions.values():
        states: dict[tuple[str | None, float], float] = {(None, 0.0): 0.0}
        for n in talk:
            miss, saving, tokens, requests, rows, served_at, minute = links[n]
            cost = miss.copy()
            if minute is not None:
                prices = priced.get(minute, {})
                for k, region in enumerate(rows):
                    if region is not None and region in prices:
                        per_token, per_request = prices[region]
                        cost[k] += tokens[k] * per_token + requests[k] * per_request
            job, start = jobs[n], jobs[n].arrival_s
            fresh: dict[tuple[str | None, float], float] = {}
            for (was, at), paid in states.items():
                for k, where in enumerate(served_at):
                    if where is None:
                        key, value = (was, at), paid + cost[k]
                    else:
                        hit = was == where and 0.0 <= start - at <= ttl.get((where, job.model), 0.0)
                        key, value = (where, start), paid + cost[k] + (saving[k] if hit else 0.0)
                    if value < fresh.get(key, math.inf):
                        fresh[key] = value
            states = fresh
        total += float(min(states.values()))
    return total


def _own_window(values: np.ndarray, cols: dict, edges: Sequence[float], members: Sequence[Job]) -> np.ndarray:
    # A group's columns span every slot any of its requests may start in, but a request
    # starts only in its own window: a 2-hour fine-tuning job grouped with a 6-hour one
    # reaches no off-peak slot the other does. Columns outside it cost inf (unserved stays).
    slots = np.array([k for _, k, _ in cols], dtype=int)
    at = np.asarray(edges)
    arrivals = np.array([[job.arrival_s] for job in members])
    latest = np.array([[job.latest_s] for job in members])
    inside = (at[slots] <= latest) & (at[slots + 1] > arrivals)
    if inside.all():
        return values
    return np.where(np.hstack([np.ones((len(members), 1), dtype=bool), inside]), values, np.inf)


def _capped(
    cols: dict, ins: np.ndarray, outs: np.ndarray, prices: Mapping[str, float], balances: Mapping[str, float]
) -> np.ndarray:
    # One request draws at most a voucher's whole balance: where a column would draw more,
    # the request pays at least the part left uncovered in cash at the same place, and
    # lambda on the balance only (a bound on its own choices, whatever lambda is). Per
    # column of ``values`` (the unserved one first), what to add.
    out = np.zeros((ins.size, len(cols) + 1))
    for j, ((region, slot, voucher), (c1, u1, _, c2, u2, _, _, _, _)) in enumerate(cols.items(), start=1):
        if voucher is None:
            continue
        cash_col = cols.get((region, slot, None))
        if cash_col is None:
            continue
        balance = max(balances.get(voucher, 0.0), 0.0)
        units = ins * u1 + outs * (u2 - u1)
        over = units > balance
        if not over.any():
            continue
        cost = ins * cash_col[0] + outs * (cash_col[3] - cash_col[0])
        cash = ins * c1 + outs * (c2 - c1)
        share = np.where(over, balance / np.maximum(units, 1e-300), 1.0)
        lam = prices.get(voucher, 0.0)
        out[:, j] = np.where(over, (cost - cash) * (1.0 - share) - lam * (units - balance), 0.0)
    return out


def _kept_vouchers(found: Plan, per_group: list[dict], members: list[list[int]]) -> frozenset[str]:
    # vouchers whose every column belongs to a training group with jobs (``bound_training``)
    training, other = set(), set()
    for d, cols, who in zip(found.demand, per_group, members, strict=True):
        used = {voucher for _, _, voucher in cols if voucher is not None}
        (training if d.work_class == "training" and who else other).update(used)
    return frozenset(training - other)


def _training_jobs(
    cols: dict,
    values: np.ndarray,
    is_kept: np.ndarray,
    ins: np.ndarray,
    outs: np.ndarray,
    kept: frozenset[str],
) -> list[TrainingJob]:
    # per job of one training group: its least relaxed value, and per kept voucher its
    # options: (cost, cash when covered, yuan covered per unit) in each slot it is valid in
    relaxed = values.min(axis=1)
    base = np.where(is_kept, np.inf, values).min(axis=1)
    out = []
    for n, (inp, outp) in enumerate(zip(ins, outs, strict=True)):
        options: dict[str, set[tuple[float, float, float]]] = {}
        for j, ((region, slot, voucher), (c1, u1, _, c2, u2, _, _, _, _)) in enumerate(cols.items(), start=1):
            if voucher not in kept or not np.isfinite(values[n, j]):  # outside its window, or down
                continue
            cash_col = cols.get((region, slot, None))
            if cash_col is None:
                continue
            cost = cash_col[0] * inp + (cash_col[3] - cash_col[0]) * outp
            cash = c1 * inp + (c2 - c1) * outp
            units = u1 * inp + (u2 - u1) * outp
            if units <= 0 or cost <= cash:
                continue
            options.setdefault(voucher, set()).add((float(cost), float(cash), float((cost - cash) / units)))
        found = {v: tuple(KeptOption(*o) for o in sorted(opts)) for v, opts in options.items()}
        out.append(TrainingJob(float(base[n]), float(relaxed[n]), found))
    return out


def _minute_value(  # noqa: ANN001
    parts, minute: int, found: Plan, limits
) -> tuple[float, dict[str, tuple[float, float]]]:
    # One clock minute's interactive requests with its (minute) rows relaxed, at the
    # best prices a few line searches find from the LP's: the minute's requests meet
    # no other minute's rows, and any prices >= 0 keep the bound. Also the prices it
    # settled on (region -> (per token, per request)): conversations are priced at them.
    names = sorted({r for *_, regions in parts for r in regions if r is not None})
    names += sorted({r for r, m in found.minute_price if m == minute} - set(names))
    where = {r: n for n, r in enumerate(names)}
    picks = [np.array([where[r] if r is not None else len(names) for r in regions]) for *_, regions in parts]
    start = [found.minute_price.get((r, minute), (0.0, 0.0)) for r in names]
    prices = np.array([[p[0] for p in start], [p[1] for p in start]])  # (token, request) x region
    caps = np.array(
        [
            [limits[r].tpm if limits[r].tpm is not None else 0.0 for r in names],
            [limits[r].rpm if limits[r].rpm is not None else 0.0 for r in names],
        ]
    )

    def value(prices: np.ndarray) -> float:
        per_token = np.append(prices[0], 0.0)
        per_request = np.append(prices[1], 0.0)
        out = -float((prices * caps).sum())
        for (values, tokens, requests, _), pick in zip(parts, picks, strict=True):
            out += float((values + tokens * per_token[pick] + requests * per_request[pick]).min(axis=1).sum())
        return out

    best = value(prices)

    def settled(prices: np.ndarray) -> dict[str, tuple[float, float]]:
        return {r: (float(prices[0, n]), float(prices[1, n])) for n, r in enumerate(names)}

    if not parts:
        return best, settled(prices)
    for kind in (0, 1):
        for n in range(len(names)):
            if prices[kind, n] <= 0:
                continue  # a row the LP found slack: its price stays 0
            lo, hi = 0.0, 2.0 * prices[kind, n]
            for _ in range(_STEPS):
                left, right = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
                trial = prices.copy()
                trial[kind, n] = left
                at_left = value(trial)
                trial[kind, n] = right
                if at_left >= value(trial):
                    hi = right
                else:
                    lo = left
            trial = prices.copy()
            trial[kind, n] = (lo + hi) / 2
            got = value(trial)
            if got > best:
                best, prices = got, trial
    return best, settled(prices)


def _rhs(config: Config, found: Plan, balances: Mapping[str, float]) -> float:
    # lambda . b over the rows ``plan`` builds when nothing is booked
    edges = found.edges
    limits = {r.id: r.limits for r in config.regions}
    out = sum(price * max(balances.get(v, 0.0), 0.0) for v, price in found.voucher_price.items())
    for prices, attr in ((found.token_price, "tpm"), (found.request_price, "rpm")):
        for region, per_slot in prices.items():
            limit = getattr(limits[region], attr)
            if limit is None:
                continue
            for k, price in enumerate(per_slot):
                if price > 0:
                    minutes = math.ceil(edges[k + 1] / 60.0) - math.floor(edges[k] / 60.0)
                    out += price * max(limit * minutes, 0.0)
    return out  # the (minute) rows: ``_minute_value``
