"""Why no region took a request: one reason per region offering its model, for the 503.

The chooser only ranks what is eligible; when nothing is, the client deserves to know why
each region dropped out (capability, policy, the latency SLO with the figures, health,
limits), and whether retrying can help. A reason is *permanent* when nothing but a config
change alters it: the region lacks the capability, the key may not use it, or its latency
prior is over the SLO with nothing measured to say otherwise. A 503 whose every reason is
permanent carries ``x-should-retry: false``, so the openai SDK does not retry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from suanli.config import Config, Region
from suanli.optimizer import Ask
from suanli.optimizer.index import capable
from suanli.router.errors import NoRouteError

__all__ = ["Exclusion", "exclusions", "no_route_error"]


@dataclass(frozen=True, slots=True)
class Exclusion:
    region: str
    reason: str
    permanent: bool


def _expected(region: Region, ask: Ask, latency_ms: Mapping[str, float]) -> float:
    return latency_ms.get(region.id, region.latency_ms(ask.origin))  # type: ignore[arg-type]


def exclusions(
    config: Config,
    ask: Ask,
    *,
    latency_ms: Mapping[str, float],
    cash_exhausted: frozenset[str] = frozenset(),
) -> list[Exclusion]:
    """The reason each region offering ``ask.model`` is out, when no region was even tried (a
    region skipped for its health or limits makes the answer a 429 or an ejection 503 instead;
    ``latency_ms`` is the expected first token of the regions measured, the chooser's view)."""
    needed = "fine_tuning" if ask.work_class == "training" else ask.capability
    slo = config.classes.interactive.latency_slo_ms
    out: list[Exclusion] = []
    for region in config.regions:
        rid = region.id
        if region.offer(ask.model) is None or (ask.pinned_region is not None and rid != ask.pinned_region):
            continue
        if not capable(region, needed):  # type: ignore[arg-type]
            out.append(Exclusion(rid, f"no {needed} capability", True))
        elif ask.allowed_regions is not None and rid not in ask.allowed_regions:
            out.append(Exclusion(rid, "not allowed for this key or this request (suanli.regions)", True))
        elif rid in ask.excluded:
            out.append(Exclusion(rid, "excluded by the request's suanli.exclude", True))
        elif ask.work_class == "interactive" and _expected(region, ask, latency_ms) > slo:
            expected = _expected(region, ask, latency_ms)
            measured = rid in latency_ms
            prior = region.latency_ms(ask.origin)  # type: ignore[arg-type]
            figures = f"expected first token {expected:.0f} ms"
            if measured:
                figures += f", prior {prior:.0f} ms"
            out.append(Exclusion(rid, f"over the {slo:g} ms latency SLO ({figures})", not measured))
        elif rid in cash_exhausted:
            out.append(Exclusion(rid, "its prepaid cash is exhausted upstream", False))
        else:
            out.append(Exclusion(rid, "its voucher ran dry while the request was placed", False))
    return out


def no_route_error(ask: Ask, found: list[Exclusion]) -> NoRouteError:
    """The 503 for ``ask``: each region's reason; ``x-should-retry: false`` when all are permanent."""
    who = f"model {ask.model!r} for class {ask.work_class} from origin {ask.origin}"
    if ask.pinned_region is not None:
        who += f" pinned to {ask.pinned_region}"
    if found:
        detail = "; ".join(f"{e.region}: {e.reason}" for e in found)
        message = f"no region can serve {who}: {detail}"
    else:
        message = f"no region offers {who} with the {ask.capability} capability"
    error = NoRouteError(message)
    if all(e.permanent for e in found):
        error.should_retry = False
    return error
