"""The planner's columns: one per (demand group, region, slot, payment) the LP may use.

``optimizer.plan`` makes a variable ``x[d,r,k,p]`` of each and ``optimizer.bound`` prices
each request on them; both read the same figures from here (the sets R(d), K(d), P(d,r,k)
and the parameters of ``plan``'s docstring).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from suanli.config import Config
from suanli.optimizer.index import Candidate, ConfigIndex, index_for
from suanli.optimizer.snapshot import Demand, Snapshot

__all__ = ["Column", "columns_of"]


@dataclass(frozen=True, slots=True)
class Column:
    """One way to serve a share of a demand group, with its coefficients in the LP."""

    demand: int  # index into ``snapshot.demand``
    region: str
    slot: int
    voucher: str | None  # None: cash
    cash: float  # g: yuan left to pay for the whole group
    units: float  # u: voucher units drawn (0 for cash)
    tokens: float  # tau: model tokens counted against tpm (0 for training)
    requests: float  # n_d counted against rpm (0 for training)
    interactive: bool


def columns_of(snapshot: Snapshot, edges: tuple[float, ...]) -> Iterator[Column]:
    """Every column of ``snapshot``'s LP over the slots ``edges``, group by group."""
    config = snapshot.config
    index = index_for(config)
    mids = [(edges[k] + edges[k + 1]) / 2 for k in range(len(edges) - 1)]
    for d_index, d in enumerate(snapshot.demand):
        if d.requests <= 0:
            continue
        slots = [k for k in range(len(mids)) if edges[k] <= d.latest and edges[k + 1] > d.earliest]
        for cand in _eligible(index, config, snapshot, d):
            ratio = snapshot.token_ratios.get((cand.region_id, d.model), cand.ratio)
            scale = ratio / cand.ratio
            base = (d.input_tokens * cand.yuan_in + d.output_tokens * cand.yuan_out) * scale
            if d.cached_tokens > 0:  # expected cache hits, priced as hits wherever they run
                base -= d.cached_tokens * (cand.yuan_in - cand.yuan_cached) * scale
            reference = d.input_tokens if d.work_class == "training" else d.input_tokens + d.output_tokens
            tokens = reference * ratio if cand.uses_capacity else 0.0
            requests = d.requests if cand.uses_capacity else 0.0
            model_tokens = reference * ratio
            for k in slots:
                factor = index.factor(cand.offer, mids[k]) if cand.timed else 1.0
                cost = base * factor if factor != 1.0 else base
                common = (d_index, cand.region_id, k)
                yield Column(*common, None, cost, 0.0, tokens, requests, d.work_class == "interactive")
                for v in cand.vouchers:
                    if not v.from_s <= mids[k] < v.to_s or snapshot.balances.get(v.id, 0.0) <= 0:
                        continue
                    if v.kind == "tokens":
                        units, cash = model_tokens, 0.0
                    elif v.kind == "credit":
                        units, cash = cost, 0.0
                    else:
                        units, cash = v.rate * cost, (1 - v.rate) * cost
                    if units <= 0:
                        continue
                    yield Column(*common, v.id, cash, units, tokens, requests, d.work_class == "interactive")


def _eligible(index: ConfigIndex, config: Config, snapshot: Snapshot, d: Demand) -> list[Candidate]:
    # R(d): regions serving d's model and class, not blocked, and (interactive, measured) within the SLO
    out = []
    measured = snapshot.latency_ms
    for cand in index.candidates(d.model, d.work_class, d.origin, prior_latency=not measured):
        if cand.region_id in snapshot.blocked:
            continue
        if d.work_class == "interactive" and measured:
            latency = measured.get(cand.region_id, cand.latency_ms)
            if latency > index.slo_ms:
                continue
        out.append(cand)
    return out
