"""A plan's capacity prices laid out per (region, slot) for the chooser, once per plan.

The chooser reads, for each candidate region, the slot's token and request prices and
whether the capacity an interactive request takes may displace later traffic. Read from
the ``Plan`` itself that is several dict look-ups and tuple reads per candidate and
request; ``prepare_prices`` does them once per plan, so the request path does one. The
planning worker calls it right after a solve, off the request path; ``prices_for``
prepares a plan nobody prepared (one taken from the plan board, say) on its first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from threading import Lock

from suanli.config import Config
from suanli.optimizer.exclusive import Inflow, exclusive_inflow
from suanli.optimizer.snapshot import Plan

__all__ = ["DEFERRED_SHARE", "PlanPrices", "SlotPrices", "prepare_prices", "prices_for"]

DEFERRED_SHARE = 0.05  # share of tpm the plan gives deferrable work from which its price holds
_INF = float("inf")
_KEEP = 8  # plans kept prepared: the current one, and a few a slow request may still hold


@dataclass(frozen=True, slots=True)
class SlotPrices:
    """One region's capacity in one slot, as the chooser prices it.

    ``inflow`` is None where capacity taken now is priced in full (no interactive traffic
    planned there, or work that may wait could use the room); otherwise it is the
    interactive traffic the plan expects per minute, ``(model tokens, requests, model
    tokens of one request)``, from which the chooser works out the chance of displacing it.
    """

    token_price: float  # yuan per model token
    request_price: float  # yuan per request
    inflow: tuple[float, float, float] | None


@dataclass(frozen=True, slots=True)
class PlanPrices:
    """``plan``'s prices by region id, then slot (regions the plan prices nowhere are absent)."""

    plan: Plan
    regions: dict[str, tuple[SlotPrices, ...]]
    # region id -> per slot, interactive traffic only it serves (``optimizer.exclusive``)
    exclusive: dict[str, tuple[Inflow | None, ...]] = field(default_factory=dict)


def prepare_prices(config: Config, plan: Plan) -> PlanPrices:
    """Lay out ``plan``'s prices for the chooser and keep them for ``prices_for``."""
    n_slots = len(plan.edges) - 1
    regions: dict[str, tuple[SlotPrices, ...]] = {}
    for region in config.regions:
        rid = region.id
        mu = plan.token_price.get(rid)
        rho = plan.request_price.get(rid)
        if not mu and not rho:
            continue  # priced at zero everywhere: the chooser adds nothing
        tpm = float(region.limits.tpm) if region.limits.tpm else _INF
        inflow_t = plan.interactive_tpm.get(rid, ())
        inflow_r = plan.interactive_rpm.get(rid, ())
        deferred = plan.deferred_tpm.get(rid, ())
        rows = []
        for k in range(n_slots):
            inflow = None
            if inflow_r and inflow_r[k] > 0 and not (deferred and deferred[k] > DEFERRED_SHARE * tpm):
                inflow = (inflow_t[k], inflow_r[k], inflow_t[k] / inflow_r[k])
            rows.append(SlotPrices(_at(mu, k), _at(rho, k), inflow))
        regions[rid] = tuple(rows)
    prepared = PlanPrices(plan, regions, exclusive_inflow(config, plan))
    with _LOCK:
        if len(_PREPARED) >= _KEEP:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[(id(config), id(plan))] = (config, prepared)
        _LAST[0] = (config, prepared)
    return prepared


def prices_for(config: Config, plan: Plan) -> PlanPrices:
    """``plan``'s prices as ``prepare_prices`` laid them out, preparing them now if nobody did."""
    last = _LAST[0]  # one read: another thread may replace it meanwhile
    if last is not None and last[1].plan is plan and last[0] is config:
        return last[1]  # the newest plan, nearly always
    found = _PREPARED.get((id(config), id(plan)))
    if found is not None and found[0] is config and found[1].plan is plan:
        return found[1]
    return prepare_prices(config, plan)


def _at(values: tuple[float, ...] | None, k: int) -> float:
    return values[k] if values and k < len(values) else 0.0


# (id(config), id(plan)) -> (config, its prices), oldest first; the objects are held so
# that their ids are not reused while they are here
_PREPARED: dict[tuple[int, int], tuple[Config, PlanPrices]] = {}
_LOCK = Lock()
_LAST: list[tuple[Config, PlanPrices] | None] = [None]  # the one prepared last
