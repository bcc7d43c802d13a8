"""The per-request chooser: eligible regions ranked by what they cost.

``rank(config, ask, state, now, plan=...)`` is the interface the proxy and ``simulate``
call on the request path: no I/O, no clock, no solver. The first option is the choice;
the rest are the fail-over order. Each eligible region is scored, in yuan, as

    cash           list cost (price x token ratio, the learned ratio where known; the
                   time-of-use factor; a session's cached input at cached_input where its
                   prompt is cached) less what the region's chosen voucher pays;
  + voucher price  with a plan: the voucher's shadow price x the units it draws;
  + capacity price with a plan, for work that uses tpm/rpm: the slot's token price x
                   model tokens + its request price. An interactive request pays it in
                   proportion to the chance that the room it takes is wanted later in
                   the same clock minute (``_displaced``; room left in a minute is
                   lost) where the plan expects only interactive traffic there
                   (``prices.SlotPrices.inflow``), in full elsewhere;
  + minute price   with a plan that priced this very clock minute (hindsight's, which
                   holds each minute's limits), for an interactive request: that
                   minute's token and request prices, added in full to the slot's
                   capacity price (no ``_displaced`` scaling);
  + congestion     a region more than half full this minute (``state.load``) costs up
                   to 5% of its list cost more when full, so near-ties go to regions
                   with room and a later request with fewer options still fits.

Least score first; ties go to the lower latency, then to the config's order. The
region's voucher is the one that scores least; with a plan a voucher wins a tie within
``VOUCHER_TIE`` of the score (the duals come from a floating-point solve). Without a plan
the score is the cash paid now plus congestion, and the replay's ``greedy`` policy
passes no load, so cash alone (DESIGN.md's greedy). With a plan a voucher is spent only
where it saves more than it is worth to the rest of the horizon, and scarce capacity is
left to the traffic the plan keeps it for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from suanli.config import Capability, Config, Offer, Region, Voucher, WorkClass, Zone
from suanli.optimizer.index import Candidate, index_for
from suanli.optimizer.payment import Charge
from suanli.optimizer.prices import SlotPrices, prices_for
from suanli.optimizer.snapshot import Plan

__all__ = ["CROWD_YUAN", "VOUCHER_TIE", "Ask", "Option", "State", "eligible", "rank"]

# Duals come from a floating-point solve: a voucher priced at exactly what it saves may
# lose to cash by 1e-9. Within this share of the score the voucher wins (the future is
# uncertain: spend it now). The one tie every placer uses, each in its own direction:
# here a voucher's score may exceed the best by the share; the deferral scheduler and
# hindsight's rounding shrink the voucher's side by it instead.
VOUCHER_TIE = 1e-6
_SPEND_WITHIN = 1 + VOUCHER_TIE  # a voucher scoring at most the best x this wins
_FREE = SlotPrices(0.0, 0.0, None)  # a region the plan prices nowhere
_CONGESTION_FROM = 0.5  # share of a minute's limits from which a region's score rises
_CONGESTION_SHARE = 0.1  # at most +5% of the cost when full
# Yuan a flexible interactive request pays per unit of chance that it leaves a request only
# this region serves no room later in the minute (``optimizer.exclusive``): about twenty
# requests' list cost, so a few fen of saving do not buy a likely rejection.
CROWD_YUAN = 0.1
_SIZE_SPREAD = 1.3  # sqrt(1 + cv^2) of request sizes: the tokens of n requests vary more than n


@dataclass(frozen=True, slots=True)
class Ask:
    """One request as the chooser sees it; token counts are reference tokens."""

    model: str
    work_class: WorkClass
    origin: Zone
    input_tokens: float
    output_tokens: float
    capability: Capability = "chat"
    pinned_region: str | None = None
    allowed_regions: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()
    # a session's follow-up: these input tokens pay price.cached_input at ``cache_region``
    # (where the session's prompt is cached now), full price elsewhere
    cached_tokens: float = 0.0
    cache_region: str | None = None


@dataclass(frozen=True, slots=True)
class State:
    """What the chooser knows of the world right now."""

    balances: Mapping[str, float]  # voucher id -> remaining units (tokens or yuan)
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # region id -> measured ttft + rtt
    blocked: frozenset[str] = frozenset()  # regions down, ejected or at their limits now
    token_ratios: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (region, model) -> learned
    load: Mapping[str, float] = field(default_factory=dict)  # region id -> share of this minute's limits used


class Option(NamedTuple):
    """One way to serve a request: where, with which voucher, at what cost.

    Immutable; a named tuple for the same reason as ``Charge``: one per candidate, per request.
    """

    region: Region
    offer: Offer
    voucher: Voucher | None
    off_peak: bool  # the time-of-use factor at the start is not 1 (``factor``)
    charge: Charge
    score: float
    factor: float = 1.0  # the offer's time-of-use factor at the start (off_peak or bands)


def eligible(config: Config, ask: Ask, state: State) -> list[tuple[Region, Offer]]:
    """Regions that offer the model, have the capability, meet the class's latency rule."""
    index = index_for(config)
    measured = state.latency_ms
    out: list[tuple[Region, Offer]] = []
    for cand in index.candidates(
        ask.model, ask.work_class, ask.origin, ask.capability, prior_latency=not measured
    ):
        rid = cand.region_id
        if ask.pinned_region is not None and rid != ask.pinned_region:
            continue
        if ask.allowed_regions is not None and rid not in ask.allowed_regions:
            continue
        if rid in ask.excluded or rid in state.blocked:
            continue
        if measured and ask.work_class == "interactive" and measured.get(rid, cand.latency_ms) > index.slo_ms:
            continue
        out.append((cand.region, cand.offer))
    return out


def _displaced(
    cand: Candidate, inflow: tuple[float, float, float], fill: float, tokens: int, now_s: float
) -> float:
    """Chance that capacity an interactive request takes now is wanted later this minute.

    The plan prices a region's capacity per slot, but a minute's tpm/rpm left unused is
    lost: when the interactive traffic the plan still expects this minute (``inflow``,
    Poisson, in a normal approximation) fits in what is left, taking the room now
    displaces nothing. Where the plan also puts work that may wait on the region (more
    than ``prices.DEFERRED_SHARE`` of its tpm), that work could use the room:
    ``prices.prepare_prices`` leaves ``inflow`` out there and the full price holds.
    """
    tokens_rate, requests_rate, size = inflow  # per minute; size: mean model tokens of one
    left = 1.0 - (now_s % 60.0) / 60.0
    requests = requests_rate * left  # expected arrivals in the rest of the minute
    odds = 0.0
    for expected, spread, room in (
        (tokens_rate * left, _SIZE_SPREAD * size * math.sqrt(requests), cand.tpm * (1 - fill) - tokens),
        (requests, math.sqrt(requests), cand.rpm * (1 - fill) - 1),
    ):
        if room == math.inf:
            continue
        if spread <= 0:
            odds = max(odds, 1.0 if expected > room else 0.0)
        else:
            odds = max(odds, 0.5 * math.erfc((room - expected) / (spread * math.sqrt(2.0))))
    return odds


def rank(config: Config, ask: Ask, state: State, now: datetime, *, plan: Plan | None = None) -> list[Option]:
    """Eligible options, least score first; see the module docstring for the score."""
    index = index_for(config)
    measured = state.latency_ms
    interactive = ask.work_class == "interactive"
    training = ask.work_class == "training"
    now_s = now.timestamp()
    balances = state.balances
    ratios = state.token_ratios
    load = state.load
    inp, out_tokens = ask.input_tokens, ask.output_tokens
    reference = inp if training else inp + out_tokens
    whole = int(reference) if reference == int(reference) else -1  # ceil(round(x, 6)) of a whole x is x
    screened = (
        ask.pinned_region is not None or ask.allowed_regions is not None or ask.excluded or state.blocked
    )
    if plan is not None:
        slot = plan.slot_at(now_s)
        minute_now = math.floor(now_s / 60.0)
        prepared = prices_for(config, plan)
        by_region = prepared.regions
        alone = prepared.exclusive if interactive else None
        minute_price = plan.minute_price if interactive else None
        voucher_price = plan.voucher_price
    ranked: list[tuple[float, float, int, Option]] = []
    counted: dict[float, int] = {}  # token ratio -> this request's tokens (regions share ratios)
    for n, cand in enumerate(
        index.candidates(ask.model, ask.work_class, ask.origin, ask.capability, prior_latency=not measured)
    ):
        rid = cand.region_id
        if screened and not _admits(ask, state, rid):
            continue
        latency = cand.latency_ms
        if measured:
            latency = measured.get(rid, latency)
            if interactive and latency > index.slo_ms:
                continue
        ratio = ratios.get((rid, ask.model), cand.ratio) if ratios else cand.ratio
        price = cand.offer.price
        # Same arithmetic, in the same order, as payment.list_cost_yuan and request_tokens.
        if training:
            cost = inp * ratio * price.train / 1e6
        elif rid == ask.cache_region and ask.cached_tokens > 0:
            fresh, hit = inp - ask.cached_tokens, ask.cached_tokens * ratio * price.cached_input
            cost = (fresh * ratio * price.input + hit + out_tokens * ratio * price.output) / 1e6
        else:
            cost = (inp * ratio * price.input + out_tokens * ratio * price.output) / 1e6
        factor = index.factor(cand.offer, now_s) if cand.timed else 1.0
        off = factor != 1.0
        if off:
            cost *= factor
        if ratio == 1.0 and whole >= 0:
            tokens = whole
        else:
            tokens = counted.get(ratio, -1)
            if tokens < 0:  # round() is the costly part of a decision at many regions
                tokens = counted[ratio] = math.ceil(round(reference * ratio, 6))
        extra = 0.0
        fill = load.get(rid, 0.0) if load else 0.0
        if plan is not None and cand.uses_capacity:
            rows = by_region.get(rid)
            here = rows[slot] if rows else _FREE
            mu, rho = here.token_price, here.request_price
            held = minute_price.get((rid, minute_now)) if minute_price else None
            if held is not None:
                # The plan priced this very minute: its slot and minute prices both apply.
                extra = (mu + held[0]) * tokens + rho + held[1]
            elif mu > 0 or rho > 0:
                need = 1.0
                if interactive and here.inflow is not None:
                    need = _displaced(cand, here.inflow, fill, tokens, now_s)
                extra = (mu * tokens + rho) * need
            crowd = alone.get(rid) if alone and held is None else None
            if crowd and crowd[slot] is not None:
                # what only this region serves may arrive later this minute and find it full
                extra += CROWD_YUAN * _displaced(cand, crowd[slot], fill, tokens, now_s)
        if fill > _CONGESTION_FROM:
            # A region filling up this minute costs a little more, so near-ties go to
            # regions with room and a later request with fewer options still fits.
            extra += cost * _CONGESTION_SHARE * (fill - _CONGESTION_FROM)
        best_score = cost + extra
        best_voucher = None
        best_units = best_covered = 0.0
        for info in cand.vouchers:
            if not info.from_s <= now_s < info.to_s:
                continue
            balance = balances.get(info.id, 0.0)
            if balance <= 0:
                continue
            if info.kind == "tokens":
                units = float(balance if balance < tokens else tokens)
                covered = cost * units / tokens if tokens else 0.0
            else:
                if cost <= 0:
                    continue
                want = cost if info.kind == "credit" else info.rate * cost
                covered = units = balance if balance < want else want
            score = cost - covered + extra
            if plan is not None:
                score += voucher_price.get(info.id, 0.0) * units
                # within VOUCHER_TIE of the best the voucher wins the tie
                better = score <= best_score * _SPEND_WITHIN + 1e-12
            else:
                better = score < best_score
            if better:
                best_score, best_voucher, best_units, best_covered = score, info.voucher, units, covered
        cash = cost - best_covered
        charge = Charge(tokens, cost, best_units, best_covered, cash if cash > 0.0 else 0.0)
        # n is unique: the sort never compares two options
        option = Option(cand.region, cand.offer, best_voucher, off, charge, best_score, factor)
        ranked.append((best_score, latency, n, option))
    ranked.sort()
    return [item[3] for item in ranked]


def _admits(ask: Ask, state: State, rid: str) -> bool:
    # the ask's pin, allow-list and exclusions, and the regions blocked now
    if ask.pinned_region is not None and rid != ask.pinned_region:
        return False
    if ask.allowed_regions is not None and rid not in ask.allowed_regions:
        return False
    return rid not in ask.excluded and rid not in state.blocked
