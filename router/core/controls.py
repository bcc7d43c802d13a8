"""Per-request routing controls: the body's ``"suanli": {...}`` object (DESIGN.md, HTTP contract).

``regions`` (allow list), ``exclude``, ``max_price_yuan_per_mtok``, ``sort`` (``cost`` or
``latency``), ``deadline_s`` and ``session``. A request narrows its key's policy and never
widens it: the regions a request may use are the key's allowed regions intersected with its
own list. Anything malformed is a 400 naming the field (``suanli.regions[1]``), before
anything is held; the object never travels upstream.

The price of an option is its expected list cost (time-of-use discount included, vouchers not
subtracted: a price, not a payment) per million of the request's reference tokens, the prompt
estimate plus its ``max_tokens``: ``cost_yuan / (input + output) x 1e6``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from suanli.config import Config
from suanli.optimizer import Ask, Option
from suanli.router.core.context import RequestContext
from suanli.router.errors import BadRequestError, NoRouteError, PermissionDeniedError

__all__ = [
    "NO_CONTROLS",
    "Controls",
    "arranged",
    "narrowed",
    "option_price",
    "parse_controls",
    "price_error",
    "with_deadline",
]

_KEYS = ("regions", "exclude", "max_price_yuan_per_mtok", "sort", "deadline_s", "session")
_SORTS = ("cost", "latency")
_SESSION_MAX_CHARS = 256


@dataclass(frozen=True, slots=True)
class Controls:
    """What one request asked of the routing; ``None`` fields were not given."""

    regions: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    max_price_yuan_per_mtok: float | None = None
    sort: Literal["cost", "latency"] = "cost"
    deadline_s: float | None = None
    session: str | None = None


NO_CONTROLS = Controls()


def parse_controls(config: Config, raw: Any) -> Controls:
    """The body's ``suanli`` value as Controls, or BadRequestError naming the offending field."""
    if raw is None:
        return NO_CONTROLS
    if not isinstance(raw, dict):
        raise BadRequestError("suanli must be an object", param="suanli")
    for name in raw:
        if name not in _KEYS:
            raise BadRequestError(
                f"unknown field suanli.{name}: use {', '.join(_KEYS)}", param=f"suanli.{name}"
            )
    known = {r.id for r in config.regions}
    regions = _region_list(raw, "regions", known)
    if regions is not None and not regions:
        raise BadRequestError("suanli.regions must name at least one region", param="suanli.regions")
    exclude = _region_list(raw, "exclude", known) or frozenset()
    price = _positive(raw, "max_price_yuan_per_mtok")
    deadline = _positive(raw, "deadline_s")
    sort = raw.get("sort", "cost")
    if sort not in _SORTS:
        raise BadRequestError(f"suanli.sort must be one of {', '.join(_SORTS)}", param="suanli.sort")
    session = raw.get("session")
    if session is not None and (not isinstance(session, str) or not 0 < len(session) <= _SESSION_MAX_CHARS):
        raise BadRequestError(
            f"suanli.session must be a string of 1 to {_SESSION_MAX_CHARS} characters", param="suanli.session"
        )
    return Controls(regions, exclude, price, sort, deadline, session)


def _region_list(raw: dict, name: str, known: set[str]) -> frozenset[str] | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequestError(f"suanli.{name} must be an array of region ids", param=f"suanli.{name}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in known:
            shown = item if isinstance(item, str) else type(item).__name__
            raise BadRequestError(
                f"suanli.{name}[{i}]: unknown region {shown!r}", param=f"suanli.{name}[{i}]"
            )
    return frozenset(value)


def _positive(raw: dict, name: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise BadRequestError(f"suanli.{name} must be a positive number", param=f"suanli.{name}")
    return float(value)


def with_deadline(ctx: RequestContext) -> RequestContext:
    """A request with ``suanli.deadline_s`` is batch work unless a header said otherwise; an
    interactive request has a latency SLO, not a deadline (400)."""
    if ctx.work_class is None:
        return replace(ctx, work_class="batch")
    if ctx.work_class == "interactive":
        raise BadRequestError(
            "suanli.deadline_s is for batch work; X-Suanli-Class says interactive", param="suanli.deadline_s"
        )
    return ctx


def narrowed(ask: Ask, controls: Controls) -> Ask:
    """``ask`` within the request's regions and exclusions; the key's policy is already in ``ask``.

    A request whose regions all lie outside its key's is refused (403): it cannot leave them.
    """
    allowed = ask.allowed_regions
    if controls.regions is not None:
        allowed = controls.regions if allowed is None else allowed & controls.regions
        if not allowed:
            raise PermissionDeniedError(
                "suanli.regions names no region this key may use", param="suanli.regions"
            )
    pinned = ask.pinned_region
    if pinned is not None and (
        pinned in controls.exclude or (controls.regions is not None and pinned not in controls.regions)
    ):
        raise BadRequestError(
            f"the model pins region {pinned!r}, which suanli.regions or suanli.exclude rules out",
            param="suanli",
        )
    if allowed is ask.allowed_regions and not controls.exclude:
        return ask
    return Ask(
        model=ask.model,
        work_class=ask.work_class,
        origin=ask.origin,
        input_tokens=ask.input_tokens,
        output_tokens=ask.output_tokens,
        capability=ask.capability,
        pinned_region=pinned,
        allowed_regions=allowed,
        excluded=ask.excluded | controls.exclude,
    )


def option_price(option: Option, ask: Ask) -> float:
    """The option's expected list price in yuan per million of the request's reference tokens."""
    reference = ask.input_tokens if ask.work_class == "training" else ask.input_tokens + ask.output_tokens
    return option.charge.cost_yuan / max(reference, 1.0) * 1e6


def arranged(
    options: list[Option],
    ask: Ask,
    controls: Controls,
    *,
    latency_ms: Mapping[str, float],
) -> list[Option]:
    """The chooser's ranking reordered as the request asked: fastest first for ``sort: latency``
    (expected first token, measured or prior; the chooser's score second). A session's prompt
    cache is priced apart (``router/core/sessions.py``)."""
    if controls.sort == "latency" and len(options) > 1:
        origin = ask.origin

        def speed(option: Option) -> tuple[float, float]:
            region = option.region
            return latency_ms.get(region.id, region.latency_ms(origin)), option.score  # type: ignore[arg-type]

        options = sorted(options, key=speed)
    return options


def price_error(ask: Ask, cap: float, cheapest: tuple[float, str]) -> NoRouteError:
    """The 503 when every eligible region is over the request's price cap: it names the cheapest."""
    price, region = cheapest
    error = NoRouteError(
        f"no region serves model {ask.model!r} at or under {cap:g} yuan per million tokens: the cheapest"
        f" eligible now is {price:.4f} at {region}",
        param="suanli.max_price_yuan_per_mtok",
        code="over_max_price",
    )
    error.should_retry = False
    return error
