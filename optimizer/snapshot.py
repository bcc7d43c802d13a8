"""What the planner reads (``Snapshot``, ``Demand``), what it hands back (``Plan``), and
where the placers put a job (``Placement``).

All times are epoch seconds (floats): the planner never reads a clock, the caller says
when "now" is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from suanli.config import Config, Offer, WorkClass, Zone
from suanli.optimizer.slots import slot_index

__all__ = ["Demand", "Flow", "Job", "Placement", "Plan", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Demand:
    """Work of one kind the planner must place: forecast, or known from a trace.

    ``earliest``/``latest`` bound the start (epoch seconds): an interactive group's
    window is its own slot; a batch or training group's runs to its deadline. Token
    counts are reference tokens, summed over the group's ``requests``.
    """

    work_class: WorkClass
    origin: Zone
    model: str
    earliest: float
    latest: float
    requests: float
    input_tokens: float
    output_tokens: float
    # of input_tokens, those expected to hit a session's prompt cache (priced at cached_input)
    cached_tokens: float = 0.0


@dataclass(frozen=True, slots=True)
class Job:
    """One known request: arrives at ``arrival_s``, may start until ``latest_s`` (epoch seconds).

    Interactive jobs have ``latest_s == arrival_s``. Tokens are reference tokens; a job of a
    ``session`` may repeat ``cached`` of its input tokens from the session's previous prompt.
    """

    index: int
    arrival_s: float
    latest_s: float
    model: str
    work_class: WorkClass
    origin: Zone
    input_tokens: float
    output_tokens: float
    session: str | None = None
    cached: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The world as the planner sees it at ``now_s``."""

    config: Config
    now_s: float
    horizon_s: float
    balances: Mapping[str, float]  # voucher id -> units free to plan (tokens or yuan)
    demand: tuple[Demand, ...]
    # (region id, clock minute) -> (model tokens, requests) already committed there
    booked: Mapping[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # region id -> measured ttft + rtt
    token_ratios: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (region, model) -> ratio


@dataclass(frozen=True, slots=True)
class Flow:
    """A share of one demand group the plan sends to a region, slot and payment."""

    demand: int
    region: str
    slot: int
    voucher: str | None
    share: float


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer: prices the chooser adds to cash, and the flows behind them.

    ``voucher_price`` is the yuan one unit of a voucher is worth to the rest of the
    horizon (its shadow price); ``token_price``/``request_price`` are the yuan one model
    token / one request of a region's capacity is worth in each slot.
    """

    edges: tuple[float, ...]
    voucher_price: Mapping[str, float]  # voucher id -> yuan per unit
    token_price: Mapping[str, tuple[float, ...]]  # region id -> yuan per model token, per slot
    request_price: Mapping[str, tuple[float, ...]]  # region id -> yuan per request, per slot
    # region id -> model tokens per minute the plan expects interactive traffic to take, per slot
    interactive_tpm: Mapping[str, tuple[float, ...]]
    interactive_rpm: Mapping[str, tuple[float, ...]]
    cash_yuan: float
    unserved_requests: float
    demand: tuple[Demand, ...] = ()
    flows: tuple[Flow, ...] = ()
    # region id -> model tokens per minute the plan gives work that may wait, per slot
    deferred_tpm: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    # (region id, clock minute) -> (yuan per model token, yuan per request) of that minute's
    # limits, where the plan held interactive groups to them (known demand, by minute)
    minute_price: Mapping[tuple[str, int], tuple[float, float]] = field(default_factory=dict)

    @property
    def start_s(self) -> float:
        return self.edges[0]

    @property
    def end_s(self) -> float:
        return self.edges[-1]

    def slot_at(self, epoch_s: float) -> int:
        """Index of the slot holding ``epoch_s`` (clamped to the horizon)."""
        return slot_index(self.edges, epoch_s)


class Placement(NamedTuple):
    """Where and when one job starts, and the voucher it means to use (None: cash).

    The one answer of every placer: the deferral scheduler (``defer``: batch and training
    as they come), hindsight's rounding of interactive requests (``rounding``: an
    interactive request starts when it arrives, so ``start_s`` is its arrival) and
    hindsight's exact search over a few training jobs (``training``). ``tokens`` are the
    serving model's tokens as the ledger counts them. Each placer ranks its options by a
    score of its own (the chooser's, a paced one, a search's floor) that means nothing
    beside another placer's, and no caller reads it, so a placement carries none.

    Immutable; a named tuple, built on the request path like ``choose.Option``.
    """

    region: str
    offer: Offer
    start_s: float  # epoch seconds
    voucher: str | None
    tokens: int
