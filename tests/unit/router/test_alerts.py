"""The alerter: an alert fires once when its condition appears and resolves when it is gone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from suanli.router.status.alerts import Alerter, reconcile_alerts
from tests.harness import small_config


async def test_fires_once_then_resolves(tmp_path: Path):
    now = [
        [{"kind": "cash_exhausted", "severity": "critical", "subject": "wuhan", "message": "out"}],
        [{"kind": "cash_exhausted", "severity": "critical", "subject": "wuhan", "message": "out"}],
        [],
    ]
    calls = iter(now)

    async def conditions() -> list[dict]:
        return next(calls)

    alerter = Alerter(small_config(tmp_path), conditions, clock=lambda: datetime(2026, 12, 7, tzinfo=UTC))
    assert [(a["kind"], a["state"]) for a in await alerter.check()] == [("cash_exhausted", "firing")]
    assert await alerter.check() == []
    resolved = await alerter.check()
    assert [(a["kind"], a["state"]) for a in resolved] == [("cash_exhausted", "resolved")]
    assert resolved[0]["id"] == alerter.recent[0]["id"]  # the same alert, resolved
    assert alerter.recent[0]["delivery"] == "no webhook"
    assert alerter.counts[("cash_exhausted", "firing")] == 1 and not alerter.active
    await alerter.stop()


def test_drift_alerts_and_unknown_only_after_repeated_failures():
    report = [
        {"region": "a", "state": "drift", "failures": 0,
         "units": {"cash_yuan": {"platform": 95.0, "expected": 100.0, "drift": -5.0, "flagged": True}}},
        {"region": "b", "state": "unknown", "failures": 2, "error": "timed out", "units": {}},
        {"region": "c", "state": "unknown", "failures": 3, "error": "timed out", "units": {}},
    ]
    found = reconcile_alerts(report, failures_before_alert=3)
    assert [(a["kind"], a["subject"]) for a in found] == [("reconcile_drift", "a"), ("balance_unknown", "c")]
    assert "95.00 against 100.00" in found[0]["message"]
