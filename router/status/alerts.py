"""Alerts that reach people: conditions checked every ``alerts.check_s``, posted to a webhook.

The conditions are the status document's ``alerts`` (a voucher about to expire with balance
left, a region ejected or out of prepaid cash, cash spend over its usual rate, reconciliation
drift or a balance unknown for several checks) plus the keys' budget thresholds
(``alerts.budget_thresholds`` of each day and month budget, spent or held). An alert *fires*
when its condition first appears and *resolves* when it is gone; each transition is posted
as JSON to ``alerts.webhook_url``:

    {"object": "suanli.alert", "id", "state": "firing" | "resolved", "kind", "severity",
     "subject", "message", "at"}

Delivery runs in its own task from a bounded queue, with ``retries`` and a doubling backoff,
so no request ever waits on it; a full queue drops the oldest and counts it. Counts by
(kind, outcome) feed ``/metrics``; the last ``keep`` alerts, with their delivery outcome, are
listed in status and the monitor.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import orjson

from suanli.config import Config
from suanli.router.ledger.port import AsyncLedger
from suanli.router.status.periodic import repeat

__all__ = ["Alerter", "budget_alerts", "reconcile_alerts"]

log = logging.getLogger("suanli.alerts")

_QUEUE_MAX = 1000

# The alerts in force now, each {kind, severity, subject, message}.
Conditions = Callable[[], Awaitable[list[dict]]]


def _alert(kind: str, severity: str, subject: str, message: str) -> dict:
    return {"kind": kind, "severity": severity, "subject": subject, "message": message}


def reconcile_alerts(report: list[dict], failures_before_alert: int) -> list[dict]:
    """Alerts of a reconciliation report: drift over the threshold, a balance unknown too long."""
    out = []
    for check in report:
        region = check["region"]
        if check["state"] == "drift":
            worst = [
                f"{unit} {u['platform']:.2f} against {u['expected']:.2f} expected ({u['drift']:+.2f})"
                for unit, u in sorted((check.get("units") or {}).items())
                if u.get("flagged")
            ]
            message = f"region {region}'s platform balance drifts from the ledger: {'; '.join(worst)}"
            out.append(_alert("reconcile_drift", "critical", region, message))
        elif check["state"] == "unknown" and check.get("failures", 0) >= failures_before_alert:
            message = (
                f"region {region}'s balance is unknown after {check['failures']} failed queries:"
                f" {check.get('error')}"
            )
            out.append(_alert("balance_unknown", "warning", region, message))
    return out


async def budget_alerts(config: Config, ledger: AsyncLedger, now: datetime) -> list[dict]:
    """One alert per key, period (day, month) and threshold of ``alerts.budget_thresholds`` that its
    spend (held included) has reached; each fires once and resolves when the period turns."""
    local = now.astimezone(ZoneInfo(config.timezone))
    periods = {"day": f"day:{local:%Y-%m-%d}", "month": f"month:{local:%Y-%m}"}
    out = []
    for key in await ledger.keys():
        budgets = {"day": key.budget_yuan_per_day, "month": key.budget_yuan_per_month}
        if key.revoked is not None or not any(budgets.values()):
            continue
        spend = await ledger.key_spend(key.id, list(periods.values()))
        for name, budget in budgets.items():
            if not budget:
                continue
            spent, held = spend.get(periods[name], (0.0, 0.0))
            share = (spent + held) / budget
            for threshold in sorted(config.alerts.budget_thresholds):
                if share >= threshold:
                    severity = "critical" if threshold >= 1.0 else "warning"
                    message = (
                        f"key {key.name} ({key.id}) used {share:.0%} of its {name} budget of"
                        f" ¥{budget:,.2f} ({periods[name]})"
                    )
                    kind = f"budget_{round(threshold * 100)}"
                    out.append(_alert(kind, severity, f"{key.id}:{name}", message))
    return out


class Alerter:
    """Fires and resolves alerts from ``conditions``; delivers them to the webhook off the request path."""

    def __init__(
        self,
        config: Config,
        conditions: Conditions,
        *,
        clock: Callable[[], datetime],
        session: aiohttp.ClientSession | None = None,
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self._leads = leads  # on a shared ledger only the leading replica checks and posts
        self._conditions = conditions
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self.active: dict[tuple[str, str], dict] = {}  # (kind, subject) -> the firing alert
        self.recent: deque[dict] = deque(maxlen=config.alerts.keep)  # newest last, with "delivery"
        self.counts: Counter[tuple[str, str]] = Counter()  # (kind, outcome) -> alerts
        self._queue: asyncio.Queue[dict] = asyncio.Queue(_QUEUE_MAX)
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Check every ``alerts.check_s`` and deliver in the background."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._check_loop(), name="suanli-alerts-check"),
                asyncio.create_task(self._deliver_loop(), name="suanli-alerts-deliver"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    async def _check_loop(self) -> None:
        await repeat(self.check, every_s=lambda: self.config.alerts.check_s, leads=self._leads, log=log,
                     what="alert check")

    async def check(self) -> list[dict]:
        """Compare the conditions now with the alerts firing: fire the new ones, resolve the gone."""
        now = self._clock().isoformat()
        found = {(a["kind"], a["subject"]): a for a in await self._conditions()}
        raised = []
        for key, condition in found.items():
            if key not in self.active:
                alert = {"object": "suanli.alert", "id": f"alert-{secrets.token_hex(6)}", "state": "firing",
                         **condition, "at": now}
                self.active[key] = alert
                raised.append(alert)
        for key in [k for k in self.active if k not in found]:
            alert = {**self.active.pop(key), "state": "resolved", "at": now}
            raised.append(alert)
        for alert in raised:
            self.counts[(alert["kind"], alert["state"])] += 1
            entry = {**alert, "delivery": "pending" if self.config.alerts.webhook_url else "no webhook"}
            self.recent.append(entry)
            if self.config.alerts.webhook_url:
                if self._queue.full():
                    dropped = self._queue.get_nowait()
                    dropped["delivery"] = "dropped"
                    self.counts[(dropped["kind"], "dropped")] += 1
                self._queue.put_nowait(entry)
        return raised

    async def _deliver_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            await self._deliver(entry)

    async def _deliver(self, entry: dict) -> None:
        settings = self.config.alerts
        url = settings.webhook_url
        if url is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        payload = orjson.dumps({k: v for k, v in entry.items() if k != "delivery"})
        wait_s = settings.backoff_s
        for attempt in range(settings.retries + 1):
            try:
                async with asyncio.timeout(settings.timeout_s):
                    async with self._session.post(
                        url, data=payload, headers={"Content-Type": "application/json"}
                    ) as response:
                        if 200 <= response.status < 300:
                            entry["delivery"] = "delivered"
                            entry["attempts"] = attempt + 1
                            self.counts[(entry["kind"], "delivered")] += 1
                            return
                        problem = f"answered {response.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problem = type(exc).__name__
            entry["attempts"] = attempt + 1
            if attempt < settings.retries:
                await asyncio.sleep(wait_s)
                wait_s *= 2
        entry["delivery"] = f"failed: {problem}"
        self.counts[(entry["kind"], "failed")] += 1
        log.warning("alert %s (%s) not delivered: %s", entry["id"], entry["kind"], problem)

    def report(self) -> dict:
        """Status: the alerts firing now and the recent ones with their delivery, newest first."""
        return {
            "webhook": bool(self.config.alerts.webhook_url),
            "firing": list(self.active.values()),
            "recent": list(reversed(self.recent)),
        }
