"""Interactive traffic a region alone can serve: what a flexible request should not crowd out.

An interactive request with two eligible regions that takes the last room of a minute at
the one that some other kind of request *only* has leaves that request nowhere to go: it
is rejected, though the first could have gone elsewhere. The plan's capacity prices are
per slot and zero where a slot has room on average, so they miss a minute's burst; greedy
gets lucky there as often as not (random day 30: the optimizer sent deepseek requests to
wuhu for a few fen, and qwen-plus requests that only wuhu serves were rejected 15 more
times than under greedy). ``exclusive_inflow`` reads from a plan, per region and slot, the
interactive traffic of the demand groups whose only eligible region it is, per minute;
the chooser prices the chance of displacing it (``choose._displaced``).
"""

from __future__ import annotations

from collections import defaultdict

from suanli.config import Config
from suanli.optimizer.index import index_for
from suanli.optimizer.snapshot import Plan

__all__ = ["Inflow", "exclusive_inflow"]

Inflow = tuple[float, float, float]  # per minute: model tokens, requests, model tokens of one request


def exclusive_inflow(config: Config, plan: Plan) -> dict[str, tuple[Inflow | None, ...]]:
    """Region id -> per slot, the plan's interactive flow there of groups no other region serves."""
    index = index_for(config)
    n_slots = len(plan.edges) - 1
    tokens: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    requests: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_slots)
    only: dict[int, float | None] = {}  # demand group -> its one region's token ratio (None: several)
    for flow in plan.flows:
        d = plan.demand[flow.demand]
        if d.work_class != "interactive":
            continue
        if flow.demand not in only:
            cands = index.candidates(d.model, d.work_class, d.origin)
            only[flow.demand] = cands[0].ratio if len(cands) == 1 else None
        ratio = only[flow.demand]
        if ratio is None:
            continue
        minutes = (plan.edges[flow.slot + 1] - plan.edges[flow.slot]) / 60.0
        share = flow.share / minutes
        tokens[flow.region][flow.slot] += (d.input_tokens + d.output_tokens) * ratio * share
        requests[flow.region][flow.slot] += d.requests * share
    return {
        rid: tuple((t, r, t / r) if r > 0 else None for t, r in zip(tokens[rid], per, strict=True))
        for rid, per in requests.items()
    }
