"""The mutable state of one simulated platform: its fault knobs, rate window and counters."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from suanli.config import Offer, Region, SimBehaviour, Voucher
from suanli.providers.sim_balance import SimWallet
from suanli.providers.sim_cache import PrefixCache

__all__ = ["FaultUpdateError", "SimState"]

RATE_WINDOW_S = 60.0
# Knobs POST /sim/faults accepts besides the SimBehaviour fields.
_EXTRA_KNOBS = ("ttft_ms", "latency_scale")


class FaultUpdateError(ValueError):
    """A fault update named an unknown knob or gave a bad value."""


@dataclass
class SimState:
    """Everything a running sim needs; the fault knobs change at runtime for fault tests."""

    region: Region
    latency_scale: float
    timezone: str = "Asia/Shanghai"
    vouchers: tuple[Voucher, ...] = ()  # the region's, the platform's own packages
    now_s: Callable[[], float] = time.time  # the platform's clock: its prompt cache's TTL and batch windows
    behaviour: SimBehaviour = field(init=False)
    ttft_ms: float = field(init=False)
    rng: random.Random = field(init=False)
    offers: dict[str, Offer] = field(init=False)  # upstream model name -> offer
    wallet: SimWallet = field(init=False)
    cache: PrefixCache = field(init=False)  # the prompt cache: kept across fault resets
    admitted: deque[float] = field(default_factory=deque)  # monotonic s of requests in the window
    stats: dict[str, int] = field(default_factory=dict)  # counter name -> count

    def __post_init__(self) -> None:
        self.offers = {offer.upstream_name: offer for offer in self.region.models}
        self.wallet = SimWallet(self.timezone, self.vouchers)  # what it charged: kept across fault resets
        self.cache = PrefixCache(self.now_s)
        self.reset()

    def charge(
        self,
        upstream_model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int = 0,
        price_factor: float = 1.0,
    ) -> None:
        """Charge an answered request to the sim's own account (its balance endpoints)."""
        offer = self.offers.get(upstream_model)
        if offer is not None:
            self.wallet.charge(
                self.behaviour,
                offer,
                prompt_tokens,
                completion_tokens,
                cached_tokens=cached_tokens,
                price_factor=price_factor,
                at_s=self.now_s(),  # the platform prices a request at its start, on its clock
            )

    def reset(self) -> None:
        """Back to the region's configured behaviour."""
        self.behaviour = self.region.sim or SimBehaviour()
        self.ttft_ms = self.region.ttft_ms
        self.rng = random.Random(self.behaviour.seed)
        self.admitted.clear()

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def update(self, changes: dict[str, object]) -> None:
        """Apply a partial update of SimBehaviour fields, ``ttft_ms`` and ``latency_scale``."""
        unknown = sorted(set(changes) - set(SimBehaviour.model_fields) - set(_EXTRA_KNOBS))
        if unknown:
            raise FaultUpdateError(f"unknown knobs: {', '.join(unknown)}")
        knobs = {k: v for k, v in changes.items() if k in SimBehaviour.model_fields}
        if isinstance(knobs.get("balance"), dict):  # a partial balance update keeps the other fields
            knobs["balance"] = {**self.behaviour.balance.model_dump(), **knobs["balance"]}
        try:
            behaviour = SimBehaviour.model_validate({**self.behaviour.model_dump(), **knobs})
        except ValidationError as exc:
            raise FaultUpdateError(_first_error(exc)) from exc
        extras = {}
        for name in _EXTRA_KNOBS:
            if name in changes:
                value = changes[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise FaultUpdateError(f"{name} must be a number >= 0")
                extras[name] = float(value)
        self.behaviour = behaviour
        self.ttft_ms = extras.get("ttft_ms", self.ttft_ms)
        self.latency_scale = extras.get("latency_scale", self.latency_scale)
        if "seed" in knobs:
            self.rng = random.Random(behaviour.seed)
        if "rate_limit_rpm" in knobs:
            self.admitted.clear()

    def snapshot(self) -> dict[str, object]:
        """The knobs as JSON (what GET /sim/faults answers)."""
        return {**self.behaviour.model_dump(), "ttft_ms": self.ttft_ms, "latency_scale": self.latency_scale}

    def retry_after_s(self) -> int | None:
        """Admit one request under ``rate_limit_rpm``, or the seconds until a slot frees."""
        limit = self.behaviour.rate_limit_rpm
        if limit is None:
            return None
        now = time.monotonic()
        while self.admitted and now - self.admitted[0] >= RATE_WINDOW_S:
            self.admitted.popleft()
        if len(self.admitted) >= limit:
            return max(1, math.ceil(self.admitted[0] + RATE_WINDOW_S - now))
        self.admitted.append(now)
        return None

    def fails(self) -> bool:
        """Draw whether this request gets the simulated ``error_status``."""
        rate = self.behaviour.error_rate
        return rate > 0 and self.rng.random() < rate

    def delay_s(self, ms: float) -> float:
        return ms * self.latency_scale / 1000.0

    def first_byte_s(self) -> float:
        """Wait before the first byte: the region's ttft plus the stall knob."""
        return self.delay_s(self.ttft_ms + self.behaviour.stall_ms)

    def per_token_s(self) -> float:
        return self.delay_s(self.behaviour.ms_per_token)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}"
