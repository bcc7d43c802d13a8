"""Prometheus gauges and counters of reconciliation and alerts, appended to ``GET /metrics``.

A region whose balance is unknown exports ``suanli_balance_known 0`` and no platform or drift
sample at all: an unknown figure is never exported as 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["accounts_metrics"]


def accounts_metrics(reconcile: list[dict], alerts_sent: Mapping[tuple[str, str], int]) -> bytes:
    """The text exposition of the reconciliation report and of the alerts counted by (kind, outcome)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(reconcile, dict(alerts_sent)))
    return generate_latest(registry)


class _Collector:
    def __init__(self, reconcile: list[dict], alerts_sent: dict[tuple[str, str], int]) -> None:
        self.reconcile, self.alerts_sent = reconcile, alerts_sent

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        known = GaugeMetricFamily(
            "suanli_balance_known", "1 when the last check read the platform's balance", labels=["region"]
        )
        platform = GaugeMetricFamily(
            "suanli_balance_platform", "The platform's own balance, per unit", labels=["region", "unit"]
        )
        expected = GaugeMetricFamily(
            "suanli_balance_expected", "What the ledger says is left, per unit", labels=["region", "unit"]
        )
        drift = GaugeMetricFamily(
            "suanli_balance_drift", "Platform minus expected, per unit", labels=["region", "unit"]
        )
        flagged = GaugeMetricFamily(
            "suanli_balance_drift_flagged", "1 when the drift is over the threshold", labels=["region"]
        )
        for check in self.reconcile:
            region = check["region"]
            units = check.get("units") or {}
            known.add_metric([region], 0.0 if check["state"] == "unknown" else 1.0)
            flagged.add_metric([region], 1.0 if check["state"] == "drift" else 0.0)
            for unit, u in sorted(units.items()):
                if u.get("platform") is not None:
                    platform.add_metric([region, unit], u["platform"])
                if u.get("expected") is not None:
                    expected.add_metric([region, unit], u["expected"])
                if u.get("drift") is not None:
                    drift.add_metric([region, unit], u["drift"])
        yield from (known, platform, expected, drift, flagged)
        sent = CounterMetricFamily(
            "suanli_alerts", "Alerts raised, by kind and delivery outcome", labels=["kind", "outcome"]
        )
        for (kind, outcome), value in sorted(self.alerts_sent.items()):
            sent.add_metric([kind, outcome], value)
        yield sent
