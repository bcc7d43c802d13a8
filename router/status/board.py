"""The ``GET /admin/status`` document: regions, vouchers, today's spend and savings, alerts.

Its shape is documented in docs/status.schema.json (and the README); the monitor reads it.
Region health and latency come from ``Router.region_stats()`` when the Router has it; the
rest of what a region entry needs is measured from the ledger's usage rows (``status_feed``).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from suanli.router.status.alerts import Alerter, reconcile_alerts
from suanli.router.status.feed import WINDOW_S, UsageFeed, WindowRow
from suanli.router.status.reconcile import Reconciler

__all__ = ["SCHEMA_VERSION", "StatusBoard"]

log = logging.getLogger("suanli.status")

SCHEMA_VERSION = 1
_CLASSES = ("interactive", "batch", "training")
_LIMIT_ALERT = 0.8  # share of a region's rpm or tpm from which it alerts


class StatusBoard:
    """Builds the status document of one Router; ``await snapshot()`` for the JSON-ready dict."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.feed = UsageFeed(router.config)
        self._lock = asyncio.Lock()
        self._started = router.clock()
        # Set by the HTTP app when it runs them: the reconciliation and the alerts it delivers.
        self.reconciler: Reconciler | None = None
        self.alerter: Alerter | None = None
        self.budget_alerts: list[dict] = []  # the keys' budget thresholds crossed, as last checked

    def reconfigure(self, config: Any) -> None:
        """A config reload: the feed's greedy comparison, reconciliation and alerts follow ``config``."""
        for part in (self.feed, self.reconciler, self.alerter):
            if part is not None:
                part.config = config

    async def snapshot(self) -> dict:
        """The status document now (reads the usage rows settled since the last call)."""
        async with self._lock:
            now = self.router.clock()
            ledger = self.router.ledger
            if ledger is None:
                raise RuntimeError("the Router is not started")
            # The first call replays up to a day of rows: keep it off the event loop.
            await asyncio.to_thread(self.feed.refresh, ledger, now)
            return self._document(now)

    def _document(self, now: datetime) -> dict:
        regions = self.region_entries(now)
        vouchers = [_voucher_entry(row, now) for row in self.router.voucher_report()]
        totals = self._totals(now)
        doc = {
            "object": "suanli.status",
            "version": SCHEMA_VERSION,
            "time": now.isoformat(),
            "timezone": self.router.config.timezone,
            "uptime_s": round((now - self._started).total_seconds(), 3),
            "regions": list(regions.values()),
            "vouchers": vouchers,
            "totals": totals,
            "alerts": self._alerts(regions, vouchers, now) + self._account_alerts(),
            "reconcile": self.reconciler.report() if self.reconciler is not None else [],
            "alerts_sent": self.alerter.report() if self.alerter is not None else None,
            "recent": list(reversed(self.feed.recent))[:20],
            "plan": self._plan(),
            "cache": self._cache(),
        }
        return doc

    def _cache(self) -> dict:
        metrics = getattr(self.router, "metrics", None)  # since this process started
        if metrics is None:
            return {"hit_rate": 0.0, "saved_yuan": 0.0, "regions": {}}
        return metrics.cache_report()

    def region_entries(self, now: datetime) -> dict[str, dict]:
        """Region id -> its entry of the status document."""
        stats = _call(self.router, "region_stats") or {}
        # account -> why it is out (a platform's 402), since when, when it is tried again
        marks = {str(m["account"]): m for m in _call(self.router, "exhausted") or []}
        window = [w for w in self.feed.window if w.time_s >= now.timestamp() - WINDOW_S]
        by_region: dict[str, list[WindowRow]] = defaultdict(list)
        class_totals: Counter[str] = Counter()
        for w in window:
            by_region[w.region].append(w)
            class_totals[w.work_class] += 1
        today = self.feed.today.by_region
        slo_ms = self.router.config.classes.interactive.latency_slo_ms
        origin = self.router.config.origin
        out: dict[str, dict] = {}
        for region in self.router.config.regions:
            rows = by_region.get(region.id, [])
            measured = stats.get(region.id) or {}
            minute = [w for w in rows if w.time_s >= now.timestamp() - 60]
            counts = Counter(w.work_class for w in rows)
            out[region.id] = {
                "id": region.id,
                "zone": region.zone,
                "provider": region.provider,
                "health": {**_health(measured), "exhausted": _mark(marks.get(f"cash:{region.id}"))},
                "latency_ms": {
                    "ttft": _pick(
                        measured.get("ttft_ms"), [w.ttft_ms for w in rows if w.ttft_ms is not None]
                    ),
                    "total": _pick(measured.get("total_ms"), [w.latency_ms for w in rows]),
                    "samples_5m": len(rows),
                },
                "limits": {
                    "rpm_used": _most(measured.get("rpm_used"), len(minute)),
                    "rpm_limit": _first(measured.get("rpm_limit"), region.limits.rpm),
                    "tpm_used": _most(measured.get("tpm_used"), sum(w.tokens for w in minute)),
                    "tpm_limit": _first(measured.get("tpm_limit"), region.limits.tpm),
                },
                "in_flight": measured.get("in_flight"),
                "interactive": _interactive(region, measured.get("interactive_ttft_ms"), slo_ms, origin),
                "requests_5m": {c: counts.get(c, 0) for c in _CLASSES},
                "share_5m": {
                    c: round(counts.get(c, 0) / class_totals[c], 4) if class_totals[c] else 0.0
                    for c in _CLASSES
                },
                "today": {
                    "requests": int(today[region.id]["requests"]) if region.id in today else 0,
                    "tokens": int(today[region.id]["tokens"]) if region.id in today else 0,
                    "cash_yuan": _yuan(today[region.id]["cash_yuan"]) if region.id in today else 0.0,
                    "cost_yuan": _yuan(today[region.id]["cost_yuan"]) if region.id in today else 0.0,
                },
            }
        return out

    def _totals(self, now: datetime) -> dict:
        day = self.feed.today
        kept = self.feed.vouchers_kept_vs_greedy(now.timestamp())
        return {
            "requests_today": day.requests,
            "tokens_today": day.tokens,
            "cash_yuan_today": _yuan(day.cash_yuan),
            "voucher_yuan_today": _yuan(day.voucher_yuan),
            "cost_yuan_today": _yuan(day.cost_yuan),
            "list_yuan_today": _yuan(day.list_yuan),
            "greedy_cash_yuan_today": _yuan(day.greedy_cash_yuan),
            "savings_vs_list_yuan": _yuan(day.list_yuan - day.cash_yuan),
            "savings_vs_greedy_yuan": _yuan(day.greedy_cash_yuan - day.cash_yuan),
            "vouchers_kept_vs_greedy_yuan": _yuan(kept),
            "savings_vs_greedy_with_vouchers_yuan": _yuan(day.greedy_cash_yuan - day.cash_yuan + kept),
        }

    def _alerts(self, regions: dict[str, dict], vouchers: list[dict], now: datetime) -> list[dict]:
        alerts: list[dict] = []
        settings = self.router.config.alerts
        expiry_s = settings.voucher_expiry_days * 86400

        def add(kind: str, severity: str, subject: str, message: str) -> None:
            alerts.append({"kind": kind, "severity": severity, "subject": subject, "message": message})

        for v in vouchers:
            left = v["expires_in_s"]
            if left is not None and 0 < left <= expiry_s and v["available"] > 0:
                unused = _units(v["available"], v["kind"])
                add("voucher_expiring", "warning", v["id"],
                    f"voucher {v['id']} expires in {_duration(left)} with {unused} left")
        for r in regions.values():
            rid, health = r["id"], r["health"]
            if health["state"] == "ejected":
                until = f" until {health['ejected_until']}" if health["ejected_until"] else ""
                add("region_ejected", "critical", rid, f"region {rid} is ejected{until}")
            if health["cash_exhausted"]:
                why = health.get("exhausted") or {}
                detail = f" ({why['reason']})" if why else ""
                if why.get("recheck_at"):
                    detail += f"; tried again at {why['recheck_at']}"
                add("cash_exhausted", "critical", rid,
                    f"the prepaid cash at region {rid} ran out upstream{detail}")
            if health["state"] == "cooling":
                add("region_cooling", "warning", rid, f"region {rid} is cooling down after a rate limit")
            for name in ("rpm", "tpm"):
                used, limit = r["limits"][f"{name}_used"], r["limits"][f"{name}_limit"]
                if used is not None and limit and used / limit > _LIMIT_ALERT:
                    share = f"{used / limit:.0%}"
                    add("limit_high", "warning", rid, f"region {rid} uses {share} of its {name} limit")
        for mark in _call(self.router, "exhausted") or []:
            if mark["voucher_id"]:
                again = f"; tried again at {mark['recheck_at']}" if mark["recheck_at"] else ""
                add("voucher_exhausted", "critical", str(mark["voucher_id"]),
                    f"voucher {mark['voucher_id']} is out upstream ({mark['reason']}){again}")
        last, usual = self.feed.usual_hourly_cash(now.timestamp())
        over = usual > 0 and last > settings.spend_rate_factor * usual
        if over and last >= settings.spend_rate_min_yuan_per_h:
            add("spend_rate_high", "warning", "cash",
                f"cash spent in the last hour, ¥{last:.2f}, is {last / usual:.1f}x the usual ¥{usual:.2f}/h")
        return alerts

    def _account_alerts(self) -> list[dict]:
        found = list(self.budget_alerts)
        if self.reconciler is not None:
            settings = self.router.config.reconcile
            found += reconcile_alerts(self.reconciler.report(), settings.failures_before_alert)
        return found

    def _plan(self) -> dict | None:
        info = _call(self.router, "plan_info")
        return info if isinstance(info, dict) else None


def _call(router: Any, name: str) -> Any:
    """``router.name()`` when the Router has it (health and planner land separately)."""
    method = getattr(router, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:  # noqa: BLE001 - a status page must render even when one source fails
        log.exception("status: Router.%s() failed", name)
        return None


def _interactive(region: Any, expected_ms: float | None, slo_ms: float, origin: str) -> dict:
    # what the interactive rule sees of the region from the config's origin
    prior = region.latency_ms(origin)
    expected_ms = prior if expected_ms is None else expected_ms
    return {"expected_ttft_ms": expected_ms, "prior_ttft_ms": prior, "slo_ms": slo_ms,
            "within_slo": expected_ms <= slo_ms}


def _health(measured: dict) -> dict:
    until = measured.get("ejected_until")
    return {
        "state": measured.get("state") or "ok",
        "ejected_until": until.isoformat() if isinstance(until, datetime) else until,
        "ejections": int(measured.get("ejections") or 0),
        "cash_exhausted": bool(measured.get("cash_exhausted")),
    }


def _mark(mark: dict | None) -> dict | None:
    """An exhaustion mark as the status shows it: since, reason, recheck_at."""
    if mark is None:
        return None
    return {"since": mark["since"], "reason": mark["reason"], "recheck_at": mark["recheck_at"]}


def _pick(measured: dict | None, samples: list[float]) -> dict:
    """p50/p95 in ms: the Router's own measurement, else from the last 5 minutes of usage rows."""
    if measured and measured.get("p50") is not None:
        return {"p50": _ms(measured.get("p50")), "p95": _ms(measured.get("p95"))}
    if not samples:
        return {"p50": None, "p95": None}
    if len(samples) == 1:
        return {"p50": _ms(samples[0]), "p95": _ms(samples[0])}
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    return {"p50": _ms(statistics.median(samples)), "p95": _ms(cuts[18])}


def _most(measured: float | None, settled: int) -> float:
    """Use in the last minute: the limiter's count (this process, admissions included) or the
    requests and tokens the ledger settled in the last 60 s (every replica), whichever is more."""
    return settled if measured is None else max(measured, settled)


def _first(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _yuan(value: float) -> float:
    return round(value, 6)


def _voucher_entry(row: dict, now: datetime) -> dict:
    amount, available, burn = row["amount"], row["available"], row["burn_per_hour"]
    expires = datetime.fromisoformat(row["expires"]) if row.get("expires") else None
    exhaustion = None
    if burn > 0 and available > 0:
        exhaustion = (now + timedelta(hours=available / burn)).isoformat()
    return {
        "id": row["id"],
        "region": row["region"],
        "kind": row["kind"],
        "amount": amount,
        "balance": row["balance"],
        "held": row["held"],
        "available": available,
        "spent": row["spent"],
        "used_share": round(row["spent"] / amount, 6) if amount else 0.0,
        "burn_per_hour": burn,
        "projected_exhaustion": exhaustion,
        "valid_from": row.get("valid_from"),
        "expires": row.get("expires"),
        "expires_in_s": round((expires - now).total_seconds(), 1) if expires else None,
    }


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60}m"


def _units(value: float, kind: str) -> str:
    return f"{value:,.0f} tokens" if kind == "tokens" else f"¥{value:,.2f}"
