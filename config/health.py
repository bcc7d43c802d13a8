"""Config of live measurement, outlier ejection, retries and probes (the ``health:`` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EjectionSettings", "ExhaustedSettings", "HealthSettings", "LatencySettings", "ProbeMode",
           "ProbeSettings", "RetrySettings"]

# How a region is probed: the model list (free), a 1-token completion (billed), or not at all.
ProbeMode = Literal["models", "completion", "off"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LatencySettings(_Frozen):
    """Sliding windows of measured latency per (region, model, origin)."""

    window: int = Field(default=200, ge=1)  # samples kept per key
    min_samples: int = Field(default=20, ge=1)  # before the measured p95 replaces the priors
    max_age_s: float = Field(default=300.0, gt=0)  # older samples are dropped: a slow region can come back
    ewma_alpha: float = Field(default=0.2, gt=0, le=1)


class EjectionSettings(_Frozen):
    """Envoy-style outlier ejection."""

    consecutive_5xx: int = Field(default=5, ge=1)
    consecutive_gateway_failures: int = Field(default=3, ge=1)  # connect errors, timeouts, broken streams
    base_ejection_s: float = Field(default=30.0, gt=0)  # ejection time = base x ejections, capped
    max_ejection_s: float = Field(default=300.0, gt=0)
    max_ejected_share: float = Field(default=0.5, gt=0, le=1)  # at least one region may always be ejected
    default_cooldown_s: float = Field(default=1.0, gt=0)  # a 429 that gave no Retry-After


class RetrySettings(_Frozen):
    """Failover before the first byte."""

    max_attempts: int = Field(default=3, ge=1)
    budget_share: float = Field(default=0.5, ge=0, le=1)  # retries in flight / requests in flight
    min_retries: int = Field(default=8, ge=0)  # retries in flight always allowed, whatever the share
    budget_wait_s: float = Field(default=2.0, ge=0)  # how long a retry over budget waits for a slot
    deadline_s: float = Field(default=60.0, gt=0)  # one overall deadline to the first byte


class ProbeSettings(_Frozen):
    """Active probes of every region whose ``probe`` is not ``off``."""

    enabled: bool = True
    interval_s: float = Field(default=30.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1)  # share of the interval, spread both ways
    timeout_s: float = Field(default=5.0, gt=0)


class ExhaustedSettings(_Frozen):
    """A voucher or a region's cash the platform said is gone (402): when to try it again."""

    recheck_s: float = Field(default=600.0, ge=0)  # half-open after this long (0: only a clear)
    check_s: float = Field(default=5.0, gt=0)  # how often marks are looked at (and others' clears seen)


class HealthSettings(_Frozen):
    latency: LatencySettings = LatencySettings()
    ejection: EjectionSettings = EjectionSettings()
    retry: RetrySettings = RetrySettings()
    probes: ProbeSettings = ProbeSettings()
    exhausted: ExhaustedSettings = ExhaustedSettings()
