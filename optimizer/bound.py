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
the LP's value, and falls short of it only by the grouping's own error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from config import Config
from optimizer.plan import UNSERVED_YUAN, _columns
from optimizer.snapshot import Job, Plan, Snapshot

__all__ = ["lagrangian_bound"]



def lagrangian_bound(
    config: Config,
    jobs: Sequence[Job],
    groups: Sequence[int],
    found: Plan,
    *,
    now_s: float,
    balances: Mapping[str, float],
) -> float:
    """Cash that any decisions serving as many requests as ``found`` pay at least.

    ``groups[i]`` is the index in ``found.demand`` of the group ``jobs[i]`` was put in;
    ``found`` is the plan of that demand from ``now_s`` with ``balances`` and nothing booked.
    """
    edges = found.edges
    # Each group's columns once with one input token, once with one input and one output
    # token: every coefficient is linear in (input, output, 1), so the two give the
    # coefficients of a request of any size (the unit input keeps the same columns).
    probes = []
    for d in found.demand:
        probes.append(dataclasses.replace(d, requests=1.0, input_tokens=1.0, output_tokens=0.0))
        probes.append(dataclasses.replace(d, requests=1.0, input_tokens=1.0, output_tokens=1.0))
    snapshot = Snapshot(
        config=config, now_s=now_s, horizon_s=edges[-1] - now_s, balances=dict(balances), demand=tuple(probes)
    )
    per_group: list[dict[tuple[str, int, str | None], list[float]]] = [{} for _ in found.demand]
    for col in _columns(snapshot, edges):
        cols = per_group[col.demand // 2]
        key = (col.region, col.slot, col.voucher)
        have = cols.setdefault(key, [0.0] * 7)
        if col.demand % 2 == 0:
            have[0:3] = [col.cash, col.units, col.tokens]
        else:
            have[3:6] = [col.cash, col.units, col.tokens]
        have[6] = col.requests
    for cols in per_group:
        # A payment missing from the input probe draws nothing for input (its cost there
        # is 0); its model tokens are those of the cash column at the same place.
        for (region, slot, voucher), have in cols.items():
            if voucher is not None and have[2] == 0.0:
                have[2] = cols.get((region, slot, None), have)[2]
    members: list[list[int]] = [[] for _ in found.demand]
    for n, g in enumerate(groups):
        members[g].append(n)

    total = 0.0
    for g, d in enumerate(found.demand):
        if not members[g]:
            continue
        minute = None
        if d.work_class == "interactive" and math.floor(d.earliest / 60.0) == math.floor(d.latest / 60.0):
            minute = math.floor(d.earliest / 60.0)
        # per column: yuan per input token, per output token, per request
        coefs = [(0.0, 0.0, UNSERVED_YUAN)]  # unserved: M per request
        for (region, slot, voucher), (c1, u1, t1, c2, u2, t2, req) in per_group[g].items():
            lam = found.voucher_price.get(voucher, 0.0) if voucher is not None else 0.0
            tok = found.token_price.get(region, ())
            rq = found.request_price.get(region, ())
            per_token = tok[slot] if tok else 0.0
            per_request = rq[slot] if rq else 0.0
            if minute is not None and t2 > 0:
                mt, mr = found.minute_price.get((region, minute), (0.0, 0.0))
                per_token += mt
                per_request += mr
            per_in = c1 + lam * u1 + per_token * t1
            per_out = (c2 - c1) + lam * (u2 - u1) + per_token * (t2 - t1)
            coefs.append((per_in, per_out, per_request * req))
        a = np.array(coefs)
        ins = np.array([jobs[n].input_tokens for n in members[g]])
        outs = np.array([jobs[n].output_tokens for n in members[g]])
        values = np.outer(ins, a[:, 0]) + np.outer(outs, a[:, 1]) + a[:, 2]
        total += float(values.min(axis=1).sum())
    return total - _rhs(config, found, balances) - UNSERVED_YUAN * found.unserved_requests


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
    for (region, _), (per_token, per_request) in found.minute_price.items():
        if limits[region].tpm is not None:
            out += per_token * max(limits[region].tpm, 0.0)
        if limits[region].rpm is not None:
            out += per_request * max(limits[region].rpm, 0.0)
    return out
