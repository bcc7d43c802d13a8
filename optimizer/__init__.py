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
    charge,
    charge_reported,
    list_cost_yuan,
    off_peak_active,
    request_tokens,
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
    "charge",
    "charge_reported",
    "eligible",
    "hindsight_bound",
    "hindsight_plan",
    "index_for",
    "known_demand",
    "list_cost_yuan",
    "local_minute",
    "minute_of",
    "off_peak_active",
    "output_bucket",
    "plan",
    "rank",
    "request_tokens",
    "slot_edges",
    "slot_index",
    "voucher_pays",
    "voucher_usable",
]
