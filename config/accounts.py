"""Config of reconciliation with the platforms' own balances and of alerts (``balance:``,
``reconcile:``, ``alerts:``, and a sim's ``sim.balance``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AlertSettings", "BalanceApi", "BalanceSource", "ReconcileSettings", "SimBalance"]

# How a platform tells its balance: a known API, a path and JSON fields of ours, or an operator.
BalanceApi = Literal["deepseek", "moonshot", "siliconflow", "openai_compatible_path", "manual"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BalanceFields(_Frozen):
    """Dotted JSON paths (``data.balance``, ``balance_infos.0.topped_up_balance``) per unit."""

    cash_yuan: str | None = None
    granted_yuan: str | None = None
    tokens: str | None = None


class BalanceSource(_Frozen):
    """A region's ``balance:`` block: where reconciliation reads the platform's own figures.

    ``deepseek`` (``GET /user/balance``), ``moonshot`` (``GET /v1/users/me/balance``) and
    ``siliconflow`` (``GET /v1/user/info``) are read at the root of the region's ``base_url``
    (or ``url`` when the balance lives elsewhere); ``openai_compatible_path`` needs ``path``
    and ``fields``; ``manual`` figures come from ``suanli vouchers set-balance``.
    """

    api: BalanceApi
    path: str | None = Field(default=None, pattern=r"^/")
    url: str | None = Field(default=None, pattern=r"^https?://")
    fields: BalanceFields | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _path_and_fields(self) -> BalanceSource:
        if self.api == "openai_compatible_path":
            if self.path is None and self.url is None:
                raise ValueError("api openai_compatible_path needs path (or url)")
            if self.fields is None or not any(self.fields.model_dump().values()):
                raise ValueError(
                    "api openai_compatible_path needs fields: {cash_yuan|granted_yuan|tokens: PATH}"
                )
        return self


class ReconcileSettings(_Frozen):
    """The background reconciliation: how often, and how much drift is flagged."""

    interval_s: float = Field(default=300.0, gt=0)
    drift_share: float = Field(default=0.02, gt=0)  # |platform - expected| over |expected|
    min_drift: float = Field(default=0.01, ge=0)  # in the unit: below this, rounding, not drift
    failures_before_alert: int = Field(default=3, ge=1)  # failed queries in a row before an alert


class AlertSettings(_Frozen):
    """Alerts to people: posted as JSON to ``webhook_url`` (retries with backoff, off the request path)."""

    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    budget_thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)  # shares of a key's day/month budget
    voucher_expiry_days: float = Field(default=1.0, ge=0)  # warn this long before, if balance is left
    spend_rate_factor: float = Field(default=2.0, gt=1)  # the last hour's cash over its usual hourly cash
    spend_rate_min_yuan_per_h: float = Field(default=0.0, ge=0)  # below this, never an alert
    check_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=1.0, gt=0)  # doubled per retry
    timeout_s: float = Field(default=5.0, gt=0)
    keep: int = Field(default=200, ge=1)  # recent alerts listed in status


class SimBalance(_Frozen):
    """A sim's balance endpoint: its cash (its packages are the region's vouchers) and how it
    misreports (to test reconciliation)."""

    cash_yuan: float = Field(default=1000.0, ge=0)
    drift: float = 0.0  # the share its reported figures are off by: 0.05 reports 5% less
    fail: bool = False  # answer the balance endpoint with a 500
