"""What a voucher is worth to this team: its traffic replayed with and without it.

The team's period (an exported trace) stands for its traffic to come. A voucher valid for
``L`` seconds is laid on the trace from its start: when ``L`` fits in the trace's span it is
valid for ``L`` of it; when the validity is longer, the traffic is taken to repeat, the
voucher holds ``span / L`` of its amount for one span (as if paced evenly over its life) and
stays valid for the span's deferred work that runs after it,
and what one span saves and uses is scaled by ``L / span`` (capped at the amount).

- ``saved_yuan``: cash without it less cash with it, over its validity;
- ``used_units``/``used_share``: what the replay drew from it before it expired;
- ``shadow_yuan_per_unit``: the plan's shadow price of one more unit (the hindsight LP's dual
  for the voucher, on the trace with the voucher), the marginal value; ``average_yuan_per_unit``
  the cash saved per unit used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from suanli.config import Config, Voucher
from suanli.optimizer import InfeasibleError, hindsight_plan
from suanli.router.ops.whatif import Scenario, replay_scenario
from suanli.router.simulate.trace import parse_trace

__all__ = ["VoucherValue", "value_voucher", "voucher_from_json"]


@dataclass(frozen=True, slots=True)
class VoucherValue:
    """The value of one voucher to the team (module docstring)."""

    voucher: str
    region: str
    kind: str
    amount: float
    validity_h: float
    span_h: float
    scale: float  # validity / span when the validity is longer than the trace, else 1
    cash_without_yuan: float
    cash_with_yuan: float
    saved_yuan: float
    used_units: float
    used_share: float
    average_yuan_per_unit: float
    shadow_yuan_per_unit: float | None
    wall_s: float

    def as_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def voucher_from_json(data: dict, *, now: datetime) -> Voucher:
    """A voucher from ``--voucher``'s JSON: region, kind, amount, expires (rate, models, classes,
    valid_from optional; valid_from defaults to ``now``); ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("--voucher wants a JSON object")
    fields = {"id": data.get("id") or f"value-{data.get('region')}-{data.get('kind')}", **data}
    fields.setdefault("valid_from", now.isoformat())
    voucher = Voucher.model_validate(fields)
    if voucher.expires is None:
        raise ValueError("--voucher needs expires (its value is over its validity)")
    return voucher


def value_voucher(
    config: Config,
    lines: Sequence[str],
    voucher: Voucher,
    *,
    span_s: float,
    base_cash_yuan: float | None = None,
    shadow: bool = True,
) -> VoucherValue:
    """Replay ``lines`` (a trace starting where the voucher's validity is laid) with and without ``voucher``.

    ``base_cash_yuan``: the replay without it, when already known (whatif's base).
    """
    started = time.perf_counter()
    trace_start = datetime.fromisoformat(_header_start(lines))
    valid_from = voucher.valid_from or trace_start
    validity_s = max((voucher.expires - valid_from).total_seconds(), 0.0) if voucher.expires else span_s
    span_s = max(span_s, 1.0)
    scale = max(validity_s / span_s, 1.0)
    # valid for its validity; when that is longer than the traffic, also for the period's deferred
    # work that runs after it (the repeated traffic would find the voucher still valid then)
    longest = max(config.classes.deadline_s("batch"), config.classes.deadline_s("training"))
    laid_s = validity_s if validity_s <= span_s else span_s + longest + 3600.0
    laid = voucher.model_copy(
        update={
            "valid_from": trace_start,
            "expires": trace_start + timedelta(seconds=laid_s),
            "amount": voucher.amount / scale,
        }
    )
    keys = [None] * (len(lines) - 1)
    if base_cash_yuan is None:
        base_cash_yuan = replay_scenario(config, lines, keys, Scenario(name="without")).cash_yuan
    with_it = replay_scenario(config, lines, keys, Scenario(name="with", vouchers=(laid,)))
    used = with_it.voucher_spent.get(laid.id, 0.0) * scale
    saved = (base_cash_yuan - with_it.cash_yuan) * scale
    shadow_price = _shadow(config, lines, laid) if shadow and validity_s > 0 else None
    return VoucherValue(
        voucher=voucher.id,
        region=voucher.region,
        kind=voucher.kind,
        amount=voucher.amount,
        validity_h=validity_s / 3600.0,
        span_h=span_s / 3600.0,
        scale=scale,
        cash_without_yuan=base_cash_yuan * scale,
        cash_with_yuan=with_it.cash_yuan * scale,
        saved_yuan=saved,
        used_units=min(used, voucher.amount),
        used_share=min(used / voucher.amount, 1.0) if voucher.amount > 0 else 0.0,
        average_yuan_per_unit=saved / used if used > 0 else 0.0,
        shadow_yuan_per_unit=shadow_price,
        wall_s=time.perf_counter() - started,
    )


def _header_start(lines: Sequence[str]) -> str:
    import orjson

    return str(orjson.loads(lines[0])["start"])


def _shadow(config: Config, lines: Sequence[str], laid: Voucher) -> float | None:
    # the hindsight LP over the trace with the voucher: its dual is the yuan one more unit saves
    with_config = config.model_copy(update={"vouchers": (*config.vouchers, laid)})
    trace = parse_trace(list(lines), with_config)
    if not trace.jobs:
        return 0.0
    try:
        found = hindsight_plan(with_config, trace.jobs)
    except InfeasibleError:
        return None
    return float(found.voucher_price.get(laid.id, 0.0))
