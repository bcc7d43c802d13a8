"""The planner's columns: one per (demand group, region, slot, payment) the LP may use.

``optimizer.plan`` makes a variable ``x[d,r,k,p]`` of each and ``optimizer.bound`` prices
each request on them; both read the same figures from here (the sets R(d), K(d), P(d,r,k)
and the parameters of ``plan``'s docstring).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from suanli.config import Config
from suanli.optimizer.index import Candidate, ConfigIndex, index_for
from suanli.optimizer.snapshot import Demand, Snapshot

__all__ = ["Column", "ColumnArrays", "column_arrays", "columns_of"]


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
            ratio, base, tokens, requests = _group_figures(snapshot, d, cand)
            reference = d.input_tokens if d.work_class == "training" else d.input_tokens + d.output_tokens
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


@dataclass(frozen=True, slots=True)
class ColumnArrays:
    """``columns_of``'s columns, in its order, as arrays (one entry per column).

    ``region`` indexes ``regions`` and ``voucher`` indexes ``vouchers`` (-1: cash). With
    pooling, ``members`` names the vouchers each pooled one stands for (itself first).
    """

    regions: tuple[str, ...]
    vouchers: tuple[str, ...]
    demand: np.ndarray
    region: np.ndarray
    slot: np.ndarray
    voucher: np.ndarray
    cash: np.ndarray
    units: np.ndarray
    tokens: np.ndarray
    requests: np.ndarray
    interactive: np.ndarray
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.demand.size)


def _group_figures(snapshot: Snapshot, d: Demand, cand: Candidate) -> tuple[float, float, float, float]:
    # (token ratio, list cost before the slot's factor, tokens and requests the capacity rows count)
    ratio = snapshot.token_ratios.get((cand.region_id, d.model), cand.ratio)
    scale = ratio / cand.ratio
    base = (d.input_tokens * cand.yuan_in + d.output_tokens * cand.yuan_out) * scale
    if d.cached_tokens > 0:  # expected cache hits, priced as hits wherever they run
        base -= d.cached_tokens * (cand.yuan_in - cand.yuan_cached) * scale
    reference = d.input_tokens if d.work_class == "training" else d.input_tokens + d.output_tokens
    tokens = reference * ratio if cand.uses_capacity else 0.0
    requests = d.requests if cand.uses_capacity else 0.0
    return ratio, base, tokens, requests


def column_arrays(snapshot: Snapshot, edges: tuple[float, ...], *, pool: bool = False) -> ColumnArrays:
    """The columns of ``columns_of(snapshot, edges)``, the same figures in the same order.

    Built without a Python object per column: per candidate region a template of its
    (slot, payment) entries over every slot (slot-major, cash first, as ``columns_of``
    yields them), and per (group, candidate) one slice of it, scaled.

    With ``pool``, vouchers alike on this horizon (region, kind, rate, models, classes and
    the slots they are valid in) are one: their columns are the same, so the LP with one
    row for their summed balance has the same value, and its price is each one's. Only the
    first of them gets columns (``members`` lists the rest).
    """
    config = snapshot.config
    index = index_for(config)
    n_slots = len(edges) - 1
    mids = [(edges[k] + edges[k + 1]) / 2 for k in range(n_slots)]
    regions = tuple(r.id for r in config.regions)
    region_at = {rid: n for n, rid in enumerate(regions)}
    vouchers = tuple(v.id for v in config.vouchers)
    voucher_at = {vid: n for n, vid in enumerate(vouchers)}
    stands_for = _pools(config, snapshot, mids) if pool else {}
    members: dict[str, list[str]] = {}
    for vid, first in stands_for.items():
        members.setdefault(first, []).append(vid)
    templates: dict[int, tuple[int, list[int]]] = {}  # id(candidate) -> (first entry, slot offsets)
    t_slot: list[int] = []
    t_voucher: list[int] = []
    t_factor: list[float] = []  # list-price factor of the entry's slot (bands, off-peak)
    t_cash: list[float] = []  # cash = cost x this
    t_per_cost: list[float] = []  # units = cost x this + model tokens x t_per_token
    t_per_token: list[float] = []
    # per kind of group (model, class, origin): its eligible candidates' figures, once
    kinds: dict[tuple[str, str, str], int] = {}
    kind_span: list[tuple[int, int]] = []  # kind -> its candidates' place in the c_ lists
    c_region: list[int] = []
    c_first: list[int] = []  # where the candidate's template starts
    c_offsets: list[list[int]] = []  # its template's offset of each slot (and the end)
    c_ratio: list[float] = []
    c_scale: list[float] = []
    c_in: list[float] = []
    c_out: list[float] = []
    c_hit: list[float] = []  # yuan_in - yuan_cached
    c_capacity: list[bool] = []
    g_index: list[int] = []  # per group placed: its index, kind, first and last slot
    g_kind: list[int] = []
    g_k0: list[int] = []
    g_k1: list[int] = []
    for d_index, d in enumerate(snapshot.demand):
        if d.requests <= 0:
            continue
        k0 = bisect.bisect_right(edges, d.earliest, 1, n_slots + 1) - 1
        k1 = bisect.bisect_right(edges, d.latest, 0, n_slots) - 1
        if k1 < k0:
            continue
        key = (d.model, d.work_class, d.origin)
        kind = kinds.get(key)
        if kind is None:
            kind = kinds[key] = len(kind_span)
            start = len(c_region)
            for cand in _eligible(index, config, snapshot, d):
                found = templates.get(id(cand))
                if found is None:
                    found = templates[id(cand)] = (len(t_slot), [])
                    offsets = found[1]
                    for k in range(n_slots):
                        offsets.append(len(t_slot) - found[0])
                        factor = index.factor(cand.offer, mids[k]) if cand.timed else 1.0  # bands, off-peak
                        t_slot.append(k), t_voucher.append(-1), t_factor.append(factor)
                        t_cash.append(1.0), t_per_cost.append(0.0), t_per_token.append(0.0)
                        for v in cand.vouchers:
                            if not v.from_s <= mids[k] < v.to_s or snapshot.balances.get(v.id, 0.0) <= 0:
                                continue
                            if stands_for.get(v.id, v.id) != v.id:
                                continue  # pooled: the first of its pool has the columns
                            t_slot.append(k), t_voucher.append(voucher_at[v.id]), t_factor.append(factor)
                            if v.kind == "tokens":
                                t_cash.append(0.0), t_per_cost.append(0.0), t_per_token.append(1.0)
                            elif v.kind == "credit":
                                t_cash.append(0.0), t_per_cost.append(1.0), t_per_token.append(0.0)
                            else:
                                t_cash.append(1 - v.rate), t_per_cost.append(v.rate), t_per_token.append(0.0)
                    offsets.append(len(t_slot) - found[0])
                ratio = snapshot.token_ratios.get((cand.region_id, d.model), cand.ratio)
                (
                    c_region.append(region_at[cand.region_id]),
                    c_first.append(found[0]),
                    c_offsets.append(found[1]),
                )
                (
                    c_ratio.append(ratio),
                    c_scale.append(ratio / cand.ratio),
                    c_capacity.append(cand.uses_capacity),
                )
                (
                    c_in.append(cand.yuan_in),
                    c_out.append(cand.yuan_out),
                    c_hit.append(cand.yuan_in - cand.yuan_cached),
                )
            kind_span.append((start, len(c_region)))
        g_index.append(d_index), g_kind.append(kind), g_k0.append(k0), g_k1.append(k1)
    pairs = _pairs(
        snapshot, n_slots, kind_span, g_index, g_kind, g_k0, g_k1,
        (c_region, c_first, c_offsets, c_ratio, c_scale, c_in, c_out, c_hit, c_capacity),
    )  # fmt: skip
    found = _gather(regions, vouchers, pairs, t_slot, t_voucher, t_factor, t_cash, t_per_cost, t_per_token)
    if members:
        found = dataclasses.replace(found, members={k: tuple(v) for k, v in members.items()})
    return found


def _pairs(
    snapshot: Snapshot,
    n_slots: int,
    kind_span: list[tuple[int, int]],
    g_index: list[int],
    g_kind: list[int],
    g_k0: list[int],
    g_k1: list[int],
    cand: tuple[list, ...],
) -> tuple[np.ndarray, ...] | None:
    # every (group, eligible candidate) in order, with its template slice and figures: the
    # arithmetic of ``_group_figures``, in the same order, on arrays
    region, first, offsets, ratio, scale, yuan_in, yuan_out, hit, capacity = cand
    if not g_index or not region:
        return None
    spans = np.array(kind_span, dtype=np.int64).reshape(-1, 2)
    kind = np.array(g_kind, dtype=np.int64)
    count = spans[kind, 1] - spans[kind, 0]
    group = np.repeat(np.arange(kind.size), count)
    c = np.repeat(spans[kind, 0] - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
    table = np.array(offsets, dtype=np.int64).reshape(-1, n_slots + 1)
    first_at = np.array(first, dtype=np.int64)[c]
    start = first_at + table[c, np.array(g_k0, dtype=np.int64)[group]]
    stop = first_at + table[c, np.array(g_k1, dtype=np.int64)[group] + 1]
    demand = [snapshot.demand[n] for n in g_index]
    d_in = np.array([d.input_tokens for d in demand])[group]
    d_out = np.array([d.output_tokens for d in demand])[group]
    d_cached = np.array([d.cached_tokens for d in demand])[group]
    d_requests = np.array([d.requests for d in demand])[group]
    training = np.array([d.work_class == "training" for d in demand])[group]
    interactive = np.array([d.work_class == "interactive" for d in demand])[group]
    c_scale, c_ratio = np.array(scale)[c], np.array(ratio)[c]
    base = (d_in * np.array(yuan_in)[c] + d_out * np.array(yuan_out)[c]) * c_scale
    base = np.where(d_cached > 0, base - d_cached * np.array(hit)[c] * c_scale, base)
    reference = np.where(training, d_in, d_in + d_out)
    uses = np.array(capacity, dtype=bool)[c]
    model_tokens = reference * c_ratio
    tokens = np.where(uses, model_tokens, 0.0)
    requests = np.where(uses, d_requests, 0.0)
    d_index = np.array(g_index, dtype=np.int64)[group]
    return (
        d_index,
        np.array(region, dtype=np.int64)[c],
        start,
        stop - start,
        base,
        model_tokens,
        tokens,
        requests,
        interactive,
    )


def _pools(config: Config, snapshot: Snapshot, mids: list[float]) -> dict[str, str]:
    # voucher id -> the first voucher alike on this horizon (itself if none before it)
    index = index_for(config)
    firsts: dict[tuple, str] = {}
    out: dict[str, str] = {}
    for v in config.vouchers:
        if snapshot.balances.get(v.id, 0.0) <= 0:
            continue
        info = index.vouchers[v.id]
        valid = tuple(info.from_s <= m < info.to_s for m in mids)
        key = (v.region, v.kind, v.rate, v.models, v.classes, valid)
        out[v.id] = firsts.setdefault(key, v.id)
    return out


def _gather(regions, vouchers, pairs, *template: list) -> ColumnArrays:  # noqa: ANN001
    # every (group, candidate) slice of its template, in order; voucher entries that
    # would draw nothing left out (as ``columns_of`` skips them)
    slot_t, voucher_t, factor_t, cash_t, per_cost_t, per_token_t = (np.asarray(t) for t in template)
    if pairs is None:
        empty = np.zeros(0)
        ints = np.zeros(0, dtype=np.int64)
        flags = empty.astype(bool)
        return ColumnArrays(regions, vouchers, ints, ints, ints, ints, empty, empty, empty, empty, flags)
    d_index, region, start, length, base, model_tokens, tokens, requests, interactive = pairs
    total = int(length.sum())
    begin = np.cumsum(length) - length
    entry = np.repeat(start - begin, length) + np.arange(total)
    cost = np.repeat(base, length) * factor_t[entry]
    cash = cost * cash_t[entry]
    units = cost * per_cost_t[entry] + np.repeat(model_tokens, length) * per_token_t[entry]
    voucher = voucher_t[entry]
    keep = (voucher < 0) | (units > 0)
    return ColumnArrays(
        regions=regions,
        vouchers=vouchers,
        demand=np.repeat(d_index, length)[keep],
        region=np.repeat(region, length)[keep],
        slot=slot_t[entry][keep],
        voucher=voucher[keep],
        cash=cash[keep],
        units=units[keep],
        tokens=np.repeat(tokens, length)[keep],
        requests=np.repeat(requests, length)[keep],
        interactive=np.repeat(interactive, length)[keep],
    )
