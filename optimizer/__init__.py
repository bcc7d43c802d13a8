"""Pure decision code: payment rules, the per-request chooser, the planner. No I/O."""

from __future__ import annotations

from suanli.optimizer.capacity import CapacityBook, minute_of
from suanli.optimizer.choose import Ask, Option, State, eligible, rank
from suanli.optimizer.defer import Deferrer
from suanli.optimizer.errors import InfeasibleError, OptimizerError
from suanli.optimizer.forecast import Forecast
from suanli.optimizer.hindsight import hindsight_bound, hindsight_plan, known_demand, output_bucket
from suanli.optimizer.index import Candidate, ConfigIndex, VoucherInfo, index_for
from suanli.optimizer.pacing import Pacer
from suanli.optimizer.payment import (
    Charge,
    cache_hit,
    capped_balance,
    charge,
    charge_reported,
    factor_at,
    list_cost_yuan,
    local_day,
    off_peak_active,
    package_window,
    period_edges,
    period_end,
    period_start,
    price_factor,
    request_tokens,
    time_of_use,
    voucher_pays,
    voucher_usable,
)
from suanli.optimizer.plan import FORECAST_SPREAD, UNSERVED_YUAN, plan
from suanli.optimizer.slots import local_minute, slot_edges, slot_index
from suanli.optimizer.snapshot import Demand, Flow, Job, Placement, Plan, Snapshot

__all__ = [
    "Ask",
    "Candidate",
    "CapacityBook",
    "Charge",
    "ConfigIndex",
    "Deferrer",
    "Demand",
    "FORECAST_SPREAD",
    "Flow",
    "Forecast",
    "InfeasibleError",
    "Job",
    "OptimizerError",
    "Option",
    "Pacer",
    "Placement",
    "Plan",
    "Snapshot",
    "State",
    "UNSERVED_YUAN",
    "VoucherInfo",
    "cache_hit",
    "capped_balance",
    "charge",
    "charge_reported",
    "eligible",
    "factor_at",
    "hindsight_bound",
    "hindsight_plan",
    "index_for",
    "known_demand",
    "list_cost_yuan",
    "local_day",
    "local_minute",
    "minute_of",
    "off_peak_active",
    "output_bucket",
    "package_window",
    "period_edges",
    "period_end",
    "period_start",
    "plan",
    "price_factor",
    "rank",
    "request_tokens",
    "slot_edges",
    "slot_index",
    "time_of_use",
    "voucher_pays",
    "voucher_usable",
]
