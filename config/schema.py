"""The config schema of DESIGN.md as frozen pydantic models."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from suanli.config.accounts import AlertSettings, BalanceSource, ReconcileSettings, SimBalance
from suanli.config.health import HealthSettings, ProbeMode

__all__ = [
    "Band",
    "BatchApi",
    "BatchClass",
    "Capability",
    "Classes",
    "Config",
    "DAY_NAMES",
    "DemandPrior",
    "InteractiveClass",
    "LedgerSettings",
    "Limits",
    "OffPeak",
    "Offer",
    "Period",
    "PlannerSettings",
    "Price",
    "Region",
    "SimBehaviour",
    "Timeouts",
    "TrainingClass",
    "Voucher",
    "WorkClass",
    "Zone",
]

Zone = Literal["east", "west"]
WorkClass = Literal["interactive", "batch", "training"]
Capability = Literal["chat", "completions", "embeddings", "batch", "fine_tuning"]
VoucherKind = Literal["tokens", "credit", "discount"]
Period = Literal["day", "week", "month"]
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
_DAY_SETS = {"all": frozenset(range(7)), "weekdays": frozenset(range(5)), "weekends": frozenset({5, 6})}

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Price(_Frozen):
    """Yuan per million tokens of the serving model.

    ``cached_input`` is a prompt-cache hit's input price; absent, it is ``input`` (no discount).
    """

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    train: float = Field(default=0.0, ge=0)
    cached_input: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _default_cached(cls, data: object) -> object:
        # filled in before validation so that every Price holds a number (frozen afterwards)
        # (a bad input is reported once, at price.input)
        if isinstance(data, dict) and data.get("cached_input") is None:
            given = data.get("input")
            try:
                ok = not isinstance(given, bool) and float(given) >= 0  # type: ignore[arg-type]
            except (TypeError, ValueError):
                ok = False
            data = {**data, "cached_input": given if ok else 0.0}
        return data


class OffPeak(_Frozen):
    """A daily local-time window in which the price is cut by ``discount``."""

    window: str
    discount: float = Field(gt=0, le=1)

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        if not _WINDOW.match(value):
            raise ValueError("window must read HH:MM-HH:MM, for example 00:30-08:30")
        return value

    def minutes(self) -> tuple[int, int]:
        """Start and end of the window in minutes after local midnight."""
        start, end = self.window.split("-")
        return _minute_of_day(start), _minute_of_day(end)


class Band(_Frozen):
    """A time-of-use band: starts inside ``window`` on one of ``days`` pay ``factor`` x the price.

    A window crossing midnight (``22:00-06:00``) belongs to the local day on which it opens.
    """

    days: str | tuple[str, ...] = "all"  # all | weekdays | weekends | a list of mon..sun
    window: str
    factor: float = Field(gt=0)

    @field_validator("days")
    @classmethod
    def _check_days(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(value, str):
            if value not in _DAY_SETS:
                raise ValueError(f"days must be all, weekdays, weekends or a list of {', '.join(DAY_NAMES)}")
            return value
        unknown = [d for d in value if d not in DAY_NAMES]
        if unknown or not value:
            raise ValueError(f"days must list some of {', '.join(DAY_NAMES)}, not {list(value)}")
        return value

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        if not _WINDOW.match(value):
            raise ValueError("window must read HH:MM-HH:MM, for example 09:00-12:00 or 22:00-06:00")
        return value

    def weekdays(self) -> frozenset[int]:
        """The local days (0 = Monday) on which the band's window opens."""
        if isinstance(self.days, str):
            return _DAY_SETS[self.days]
        return frozenset(DAY_NAMES.index(d) for d in self.days)

    def minutes(self) -> tuple[int, int]:
        """Start and end of the window in minutes after local midnight."""
        start, end = self.window.split("-")
        return _minute_of_day(start), _minute_of_day(end)


def _minute_of_day(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Offer(_Frozen):
    """A model served by a region."""

    name: str = Field(min_length=1)
    upstream: str | None = None
    price: Price
    token_ratio: float = Field(default=1.0, gt=0)
    off_peak: OffPeak | None = None
    bands: tuple[Band, ...] | None = None  # time-of-use bands, instead of off_peak; first match wins
    cache_ttl_s: float = Field(default=300.0, ge=0)  # how long the platform keeps a session's prompt

    @field_validator("bands")
    @classmethod
    def _one_time_of_use(
        cls, value: tuple[Band, ...] | None, info: ValidationInfo
    ) -> tuple[Band, ...] | None:
        if value is not None and info.data.get("off_peak") is not None:
            raise ValueError("give either off_peak or bands, not both (an off_peak window is one band)")
        return value

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.name


class Limits(_Frozen):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)


class Timeouts(_Frozen):
    connect_s: float = Field(default=3.0, gt=0)
    first_byte_s: float = Field(default=15.0, gt=0)
    idle_s: float = Field(default=30.0, gt=0)
    # A whole (non-streamed) answer's first byte is its last: it is waited for first_byte_s plus
    # its longest choice's max_tokens at this pace before it counts as stalled.
    whole_answer_tokens_per_s: float = Field(default=20.0, gt=0)

    def whole_answer_s(self, output_tokens: int) -> float:
        """The wait for a whole answer of at most ``output_tokens`` per choice, connect aside."""
        return self.first_byte_s + output_tokens / self.whole_answer_tokens_per_s


class SimBehaviour(_Frozen):
    """How a simulated city platform behaves; every knob is optional."""

    ms_per_token: float = Field(default=2.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)
    rate_limit_rpm: int | None = Field(default=None, gt=0)
    stall_ms: float = Field(default=0.0, ge=0)
    reset_after_chunks: int | None = Field(default=None, ge=0)
    # A hostile platform, for leak tests: its errors echo its API key in message, code and param,
    # and its streams end in an error event carrying the key.
    echo_key: bool = False
    seed: int = 0
    balance: SimBalance = SimBalance()  # its balance endpoints (reconciliation)


class BatchApi(_Frozen):
    """The platform's own OpenAI-compatible ``/v1/batches``: ``price_factor`` x the list price,
    done within ``window_h`` hours (Bailian, Ark and SiliconFlow: 0.5 within 24 h)."""

    price_factor: float = Field(default=0.5, gt=0, le=1)
    window_h: float = Field(default=24.0, gt=0)


class Region(_Frozen):
    """One city compute platform."""

    id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    zone: Zone
    provider: str = Field(min_length=1)
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    rtt_ms: dict[Zone, float] = Field(default_factory=dict)
    ttft_ms: float = Field(default=300.0, ge=0)
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    capabilities: tuple[Capability, ...] = ("chat", "completions", "embeddings")
    models: tuple[Offer, ...] = Field(min_length=1)
    sim: SimBehaviour | None = None
    probe: ProbeMode = "models"  # "off" for a platform that bills even the model list
    balance: BalanceSource | None = None  # where reconciliation reads the platform's own balance
    batch_api: BatchApi | None = None  # the platform runs batches itself, at a discount

    @field_validator("rtt_ms")
    @classmethod
    def _check_rtt(cls, value: dict[str, float]) -> dict[str, float]:
        for zone, ms in value.items():
            if ms < 0:
                raise ValueError(f"rtt_ms.{zone} must be >= 0")
        return value

    def offer(self, model: str) -> Offer | None:
        """The offer for public model name ``model``, if this region serves it."""
        for offer in self.models:
            if offer.name == model:
                return offer
        return None

    def latency_ms(self, origin: Zone) -> float:
        """Prior time to first token as seen from ``origin``."""
        return self.ttft_ms + self.rtt_ms.get(origin, 0.0)


class Voucher(_Frozen):
    """A prepaid instrument bound to one region."""

    id: str = Field(min_length=1)
    region: str
    kind: VoucherKind
    amount: float = Field(ge=0)
    rate: float | None = Field(default=None, gt=0, le=1)
    models: tuple[str, ...] | None = None
    classes: tuple[WorkClass, ...] | None = None
    valid_from: datetime | None = None
    expires: datetime | None = None
    period: Period | None = None  # a package: holds ``amount`` afresh each local day/week/month
    daily_cap: float | None = Field(default=None, gt=0)  # at most these units paid per local day

    @model_validator(mode="after")
    def _check_kind(self) -> Voucher:
        if self.kind == "discount" and self.rate is None:
            raise ValueError("a discount voucher needs rate (the share of the price it pays)")
        if self.kind != "discount" and self.rate is not None:
            raise ValueError("rate applies to discount vouchers only")
        return self


class InteractiveClass(_Frozen):
    latency_slo_ms: float = Field(default=400.0, gt=0)


class BatchClass(_Frozen):
    deadline_s: float = Field(default=86400.0, gt=0)


class TrainingClass(_Frozen):
    deadline_s: float | None = Field(default=None, gt=0)


class Classes(_Frozen):
    interactive: InteractiveClass = InteractiveClass()
    batch: BatchClass = BatchClass()
    training: TrainingClass = TrainingClass()

    def deadline_s(self, work_class: WorkClass) -> float:
        """Default deadline of a class; training without one takes batch's."""
        if work_class == "training" and self.training.deadline_s is not None:
            return self.training.deadline_s
        return self.batch.deadline_s


class LedgerSettings(_Frozen):
    url: str = "sqlite:///suanli.db"
    hold_timeout_s: float = Field(default=300.0, gt=0)
    # PostgreSQL: the longest a statement waits for a row lock, and the longest a session may sit
    # idle inside a transaction (a stopped replica's); past them the server ends the wait or the session.
    lock_timeout_s: float = Field(default=1.0, gt=0)
    idle_in_transaction_timeout_s: float = Field(default=2.0, gt=0)
    # PostgreSQL: how long a replica whose liveness session dropped is still presumed alive (it reconnects).
    liveness_grace_s: float = Field(default=10.0, gt=0)
    # How long a settle (the upstream already answered) is retried while the ledger cannot write,
    # the answer held meanwhile; past it the client gets 503 and the hold stays pending.
    settle_retry_s: float = Field(default=10.0, ge=0)


class PlannerSettings(_Frozen):
    """How the optimizer plans: horizon, re-plan period, solver time limit."""

    horizon_h: float = Field(default=24.0, gt=0)
    replan_s: float = Field(default=60.0, gt=0)
    max_slot_s: float = Field(default=3600.0, gt=0)
    time_limit_s: float = Field(default=2.0, gt=0)


class DemandPrior(_Frozen):
    """Expected traffic of one kind, a prior the planner's online forecast starts from.

    ``hourly`` optionally shapes the rate over the local day (24 weights, mean 1).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    work_class: WorkClass = Field(alias="class")
    origin: Zone = "east"
    model: str = Field(min_length=1)
    requests_per_hour: float = Field(ge=0)
    input_tokens: float = Field(default=1000.0, ge=0)
    output_tokens: float = Field(default=300.0, ge=0)
    deadline_s: float | None = Field(default=None, gt=0)
    hourly: tuple[float, ...] | None = None

    @field_validator("hourly")
    @classmethod
    def _check_hourly(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (len(value) != 24 or any(w < 0 for w in value)):
            raise ValueError("hourly must list 24 non-negative weights, one per local hour")
        return value


class Config(_Frozen):
    """One whole, cross-checked suanli config."""

    timezone: str = "Asia/Shanghai"
    origin: Zone = "east"
    master_key: str | None = Field(default=None, repr=False)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    default_max_tokens: int = Field(default=4096, gt=0)
    ledger: LedgerSettings = LedgerSettings()
    data_dir: str | None = None  # uploaded files and batch results; default: beside a SQLite ledger
    # redis://host:6379/0: region limits shared by every replica (router/core/limits_shared.py)
    limits_url: str | None = Field(default=None, pattern=r"^rediss?://")
    planner: PlannerSettings = PlannerSettings()
    classes: Classes = Classes()
    regions: tuple[Region, ...] = Field(min_length=1)
    vouchers: tuple[Voucher, ...] = ()
    demand: tuple[DemandPrior, ...] = ()  # optional prior for the planner's forecast
    health: HealthSettings = HealthSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    alerts: AlertSettings = AlertSettings()

    def region(self, region_id: str) -> Region | None:
        for region in self.regions:
            if region.id == region_id:
                return region
        return None

    def model_names(self) -> list[str]:
        """Every public model name, sorted, once."""
        return sorted({offer.name for region in self.regions for offer in region.models})
