"""What a conversation's turn is worth where its prompt stays cached: hindsight and online.

A turn served at a region with a cache price leaves the conversation's prompt cached there:
the next turn, if it comes within the TTL, may pay ``price.cached_input`` on the repeated
part there. Choosing a turn's region by its own cost alone misses that: at a DeepSeek-style
peak the cheapest region for a first turn has no cache price, and the whole conversation then
stays where every follow-up pays full input (the ``peaks`` day lost a third of its cacheable
tokens so). Both policies add the next turns' cost to a turn's score:

- ``Conversations`` (hindsight, every turn known): per turn and region the least cost of the
  conversation's later turns given this one is served there, a shortest path backwards over
  the turns at the plan's voucher prices (capacity is left to the rounding that uses it);
- ``FollowUps`` (online): what it learnt so far of how often a session's request has a
  follow-up within the TTL and how much of its prompt that repeats; ``with_follow_ups``
  credits each option with the next turn's expected saving where the option leaves the
  prompt cached, at the request's own shape and this instant's prices.

Pure functions and plain state: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from suanli.config import Config, Offer
from suanli.optimizer.choose import Ask, Option
from suanli.optimizer.index import index_for
from suanli.optimizer.payment import list_cost_yuan, request_tokens, voucher_pays
from suanli.optimizer.snapshot import Job, Placement, Plan

__all__ = ["Conversations", "FollowUps", "scarce_regions", "with_follow_ups"]


class Conversations:
    """The conversations of interactive requests among ``jobs``, for hindsight's rounding.

    ``cached_at`` is the rule of DESIGN.md ("Prompt cache") on the turns placed so far;
    ``later`` the least yuan (cash plus vouchers at ``voucher_price`` per unit) the turns after
    a job cost if it is served at a region, less that least over its regions.
    """

    def __init__(self, config: Config, jobs: Sequence[Job], voucher_price: Mapping[str, float]) -> None:
        self._index = index_for(config)
        self._price = voucher_price
        self._ttl = {(r.id, o.name): o.cache_ttl_s for r in config.regions for o in r.models}
        talks: dict[str, list[Job]] = {}
        for job in jobs:
            if job.session is not None:
                talks.setdefault(job.session, []).append(job)
        self._before: dict[int, Job | None] = {}  # job index -> the turn before it
        self._later: dict[int, dict[str, float]] = {}
        for talk in talks.values():
            if len(talk) < 2 or any(j.work_class != "interactive" for j in talk):
                continue
            talk.sort(key=lambda j: (j.arrival_s, j.index))
            for before, job in zip([None, *talk], talk, strict=False):
                self._before[job.index] = before
            self._backwards(talk)

    def _costs(self, job: Job, cached: float) -> dict[str, float]:
        # region -> the least cost of ``job`` there (its best payment), ``cached`` tokens hit
        out: dict[str, float] = {}
        for cand in self._index.candidates(job.model, "interactive", job.origin, "chat", prior_latency=True):
            offer = cand.offer
            factor = self._index.factor(offer, job.arrival_s)
            cost = list_cost_yuan(offer, job.input_tokens, job.output_tokens, "interactive",
                                  factor=factor, cached=cached)  # fmt: skip
            best = cost
            tokens = request_tokens(offer, job.input_tokens, job.output_tokens, "interactive")
            for info in cand.vouchers:
                if not info.from_s <= job.arrival_s < info.to_s:
                    continue
                units, covered = voucher_pays(info.voucher, math.inf, tokens=tokens, cost_yuan=cost)
                best = min(best, cost - covered + self._price.get(info.id, 0.0) * units)
            out[cand.region_id] = min(best, out.get(cand.region_id, math.inf))
        return out

    def _backwards(self, talk: list[Job]) -> None:
        # later[k][r]: least cost of turns k+1.. given turn k at r (a hit needs r, the model, the TTL)
        after: dict[str, float] = {}  # region -> least cost of the turns after the next one
        for k in range(len(talk) - 1, 0, -1):
            nxt, job = talk[k], talk[k - 1]
            miss = self._costs(nxt, 0.0)
            hit = self._costs(nxt, nxt.cached) if nxt.cached > 0 else miss
            best_miss = min((c + after.get(r, 0.0) for r, c in miss.items()), default=0.0)
            here: dict[str, float] = {}
            for region in miss:
                ttl = self._ttl.get((region, nxt.model), 0.0)
                within = nxt.model == job.model and nxt.arrival_s - job.arrival_s <= ttl
                stay = hit[region] + after.get(region, 0.0) if within else math.inf
                here[region] = min(best_miss, stay)
            low = min(here.values(), default=0.0)
            self._later[job.index] = {r: v - low for r, v in here.items()}
            after = here

    def later(self, job: Job, region: str) -> float:
        """Yuan the turns after ``job`` cost at least if it is served at ``region``, above the least."""
        return self._later.get(job.index, {}).get(region, 0.0)

    def cached_at(
        self, job: Job, region: str, offer: Offer, placed: Mapping[int, Placement | None]
    ) -> float:
        """``job.cached`` where the session's previous served turn (``placed``) makes a hit at ``region``."""
        if job.cached <= 0:
            return 0.0
        before = self._before.get(job.index)
        while before is not None:
            where = placed.get(before.index)
            if where is not None:
                near = 0.0 <= job.arrival_s - where.start_s <= offer.cache_ttl_s
                same = where.region == region and where.offer.name == job.model
                return job.cached if near and same else 0.0
            if before.index in placed:  # rejected: the one before it is the previous served
                before = self._before.get(before.index)
                continue
            return 0.0  # not placed yet (the same minute): no hit counted
        return 0.0


class FollowUps:
    """What the online policy learnt of sessions: how often a request is followed, how much repeats.

    ``seen`` is fed every session request as it arrives: a request with ``cached`` > 0 is a
    follow-up of its session's previous one; ``share`` is follow-ups per session request,
    ``repeat`` their cached tokens per input token of the request they follow.
    """

    def __init__(self) -> None:
        self._requests = 0
        self._follow = 0
        self._cached = 0.0
        self._prompt = 0.0
        self._last: dict[str, float] = {}  # session -> its last request's input tokens

    def seen(self, session: str | None, input_tokens: float, cached: float) -> None:
        if session is None:
            return
        self._requests += 1
        before = self._last.get(session)
        if cached > 0 and before is not None:
            self._follow += 1
            self._cached += cached
            self._prompt += before
        self._last[session] = input_tokens

    @property
    def share(self) -> float:
        # a prior of one follow-up in two until a few are seen
        return (self._follow + 1.0) / (self._requests + 2.0)

    @property
    def repeat(self) -> float:
        return (self._cached + 1.0) / (self._prompt + 1.0) if self._follow else 1.0


def with_follow_ups(
    options: list[Option],
    ask: Ask,
    follow: FollowUps,
    load: Mapping[str, float] | None = None,
    scarce: frozenset[str] = frozenset(),
) -> list[Option]:
    """``options`` reordered by score less the expected saving of the next turn they make possible.

    The next turn is taken to be shaped like this one with ``repeat`` x its input cached: at the
    option's region it would cost its cost there less the hit's saving, elsewhere the least
    of the options' costs; the option is credited ``share`` x what staying would save. A region
    filling up this minute (``load``: share of its limits used) earns less of it, none from half
    full, and one whose capacity the plan prices now (``scarce``) none: its room is for
    requests that have no other choice, not for a saving to come.
    """
    if len(options) < 2:
        return options
    cached = follow.repeat * ask.input_tokens
    miss = []
    for option in options:
        score = option.score
        if option.region.id == ask.cache_region and ask.cached_tokens > 0:
            score += _saving(option.offer, ask.cached_tokens, option.factor)  # this turn's own hit
        miss.append(score)
    best = min(miss)
    credit = []
    for option, score in zip(options, miss, strict=True):
        rid = option.region.id
        gain = best - (score - _saving(option.offer, cached, option.factor))
        credit.append(0.0 if rid in scarce else follow.share * max(gain, 0.0) * _room(load, rid))
    if not any(credit):
        return options
    order = sorted(range(len(options)), key=lambda i: options[i].score - credit[i])
    return [options[i] for i in order]


def scarce_regions(plan: Plan, at_s: float) -> frozenset[str]:
    """Regions whose tpm or rpm ``plan`` prices in the slot holding ``at_s`` (their room is wanted)."""
    slot = plan.slot_at(at_s)
    out = set()
    for prices in (plan.token_price, plan.request_price):
        for region, per_slot in prices.items():
            if 0 <= slot < len(per_slot) and per_slot[slot] > 0:
                out.add(region)
    return frozenset(out)


def _room(load: Mapping[str, float] | None, region: str) -> float:
    # 1 for a region empty this minute, falling to 0 at half full
    fill = load.get(region, 0.0) if load else 0.0
    return max(0.0, 1.0 - 2.0 * fill)


def _saving(offer: Offer, cached: float, factor: float) -> float:
    # what ``cached`` reference input tokens save as a hit at ``offer`` (never below 0)
    cut = offer.price.input - offer.price.cached_input
    return max(cut, 0.0) * cached * offer.token_ratio / 1e6 * factor
