"""Live planning: the GLOP planner re-solved in a worker thread, its latest plan read by the chooser.

The request path only reads ``Replanner.plan`` and ``Replanner.token_ratios`` (attribute
reads; both are replaced whole, never changed in place) and reports served requests
through ``served``. A daemon thread wakes every ``poll_s`` of real time and solves
``plan(snapshot)`` when one is due: at start, every ``planner.replan_s`` of *clock*
time (the Router's injected clock), and at once when a voucher balance, the set of
blocked regions or a learned token ratio changes materially. Its snapshot holds the
ledger's free balances, the config and the demand forecast learned from the traffic
served (per class, origin, model and local hour; ``Config.demand`` is its prior).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from suanli.config import Config
from suanli.optimizer import Ask, Demand, Forecast, InfeasibleError, Plan, Snapshot, plan, slot_edges
from suanli.optimizer.packages import expand_packages, fold_packages
from suanli.optimizer.prices import prepare_prices
from suanli.optimizer.ratios import RatioEstimator

__all__ = ["Replanner"]

log = logging.getLogger("suanli.planning")

_BALANCE_SHARE = 0.1  # a voucher moving by this share of its planned balance is a material change
_DRY_UNITS = 1e-9
_SEEN_MAX = 200_000  # bounds the served-request queue should the thread fall behind
_DEMAND_SCALES = (1.0, 0.5, 0.25)  # forecast shares tried in turn when a solve fails


class Replanner:
    """Keeps a fresh plan for the live Router; ``start()`` the thread, ``stop()`` it."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime],
        balances: Callable[[], Mapping[str, float]],
        blocked: Callable[[], frozenset[str]] = frozenset,
        solve: Callable[[Snapshot], Plan] = plan,
        poll_s: float = 0.25,
        min_gap_s: float = 1.0,
        min_ratio_samples: int = 20,
    ) -> None:
        self.config = config
        self.plan: Plan | None = None
        self.token_ratios: Mapping[tuple[str, str], float] = {}  # (region, model) -> learned ratio
        self._clock = clock
        self._balances = balances
        self._blocked = blocked
        self._solve_fn = solve
        self._poll_s = poll_s
        self._min_gap_s = min_gap_s  # real seconds between two event-driven solves: bounds the CPU
        self._ratios = RatioEstimator(min_samples=min_ratio_samples)
        self._end_s = float("inf")
        self._forecast = Forecast(config, start_s=clock().timestamp())
        self._lock = threading.Lock()  # guards the forecast and the ratio estimator
        # served requests the forecast has not taken in yet: (ask, reference output tokens, epoch s)
        self._seen: deque[tuple[Ask, float, float]] = deque(maxlen=_SEEN_MAX)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poked: str | None = None
        self._next_s = -float("inf")  # clock time of the next periodic solve
        self._last_solve_mono = -float("inf")
        self._planned_balances: dict[str, float] = {}
        self._planned_blocked: frozenset[str] = frozenset()
        self._offers = {(r.id, o.name): o for r in config.regions for o in r.models}
        self._info: dict = {"planned_at": None, "solve_ms": None, "plans": 0, "reason": None, "error": None}

    def start(self) -> None:
        """Start the worker thread; the first plan follows at once."""
        if self._thread is not None:
            return
        # Load OR-Tools here, before traffic: its extension's import holds the GIL for tens of
        # milliseconds, which would stall the event loop if the first solve did it.
        from ortools.linear_solver import pywraplp  # noqa: F401

        self._forecast = Forecast(self.config, start_s=self._clock().timestamp(), end_s=self._end_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="suanli-replanner", daemon=True)
        self._thread.start()
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (waits for a solve in progress, bounded by the solver's time limit)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout_s)

    def reconfigure(self, config: Config) -> None:
        """A config reload: the next plan (at once) is of ``config``. The demand learned is kept
        unless the models, classes or demand prior changed, which the forecast is built on."""
        old, now_s = self.config, self._clock().timestamp()
        with self._lock:
            if (old.model_names(), old.classes, old.demand, old.timezone) != (
                config.model_names(), config.classes, config.demand, config.timezone
            ):
                self._forecast = Forecast(config, start_s=now_s, end_s=self._end_s)
            self._offers = {(r.id, o.name): o for r in config.regions for o in r.models}
            self.config = config
        self.poke("config_reload")

    def expect_no_demand_after(self, end_s: float) -> None:
        """Forecast no arrivals after ``end_s`` (epoch s), as ``simulate``'s forecast expects none
        after its trace: for a replay of one bounded day, where voucher units kept for a
        tomorrow that never comes are simply lost. Call before ``start()``."""
        self._end_s = end_s
        with self._lock:
            self._forecast = Forecast(self.config, start_s=self._clock().timestamp(), end_s=end_s)

    def poke(self, reason: str) -> None:
        """Ask for a solve soon (at most one per ``min_gap_s``), whatever the clock says."""
        self._poked = reason
        self._wake.set()

    def served(
        self,
        ask: Ask,
        *,
        region: str,
        prompt_tokens: int,
        completion_tokens: int,
        reported: bool,
        at: datetime,
        new_demand: bool = True,
    ) -> None:
        """Count one served request: a forecast sample (unless it is known work the forecast took
        in when it was booked, ``new_demand`` False), and a token-ratio sample when reported."""
        key = (region, ask.model)
        offer = self._offers.get(key)
        ratio = self.token_ratios.get(key) or (offer.token_ratio if offer else 1.0)
        if new_demand:
            # The forecast takes it in the worker thread: a deque append is all the request pays.
            self._seen.append((ask, completion_tokens / ratio, at.timestamp()))
        with self._lock:
            moved = reported and self._ratios.observe(
                key, reference_tokens=ask.input_tokens, reported_tokens=prompt_tokens
            )
            if moved:
                self.token_ratios = self._ratios.learned()
        if moved:
            self.poke("token_ratio")

    def forecast(self, edges: tuple[float, ...], now_s: float) -> tuple[Demand, ...]:
        """The demand the live traffic leads to expect in the slots of ``edges`` from ``now_s`` on.

        For planners of known work (batches, fine-tuning) that should leave room for it.
        """
        with self._lock:
            self._take_seen()
            return self._forecast.demand(edges, now_s)

    def _take_seen(self) -> None:
        # Under self._lock. deque.popleft is atomic, so requests served meanwhile are kept.
        seen = self._seen
        while seen:
            ask, output_tokens, at_s = seen.popleft()
            # Live requests start at once (a synchronous caller cannot wait): no start window.
            self._forecast.observe(
                (ask.work_class, ask.origin, ask.model),
                input_tokens=ask.input_tokens,
                output_tokens=output_tokens,
                window_s=0.0,
                at_s=at_s,
            )

    def observe(self, kind: tuple[str, str, str], *, input_tokens: float, output_tokens: float,
                at_s: float, window_s: float = 0.0) -> None:
        """Count a request in the forecast, (class, origin, model): one served elsewhere (another
        replica), or deferrable work booked now that may start within ``window_s`` (a batch
        line, as ``simulate``'s forecast sees it), so the plan keeps vouchers and cheap hours for
        the kind of work that can wait for them."""
        with self._lock:
            self._forecast.observe(kind, input_tokens=input_tokens, output_tokens=output_tokens,  # type: ignore[arg-type]
                                   window_s=window_s, at_s=at_s)

    def info(self) -> dict:
        """The latest plan as JSON-ready data (for the status API)."""
        out = dict(self._info)
        current = self.plan
        now_s = self._clock().timestamp()
        slot = current.slot_at(now_s) if current is not None else 0
        out["shadow_prices"] = {  # voucher id -> yuan per unit (token or yuan) of balance
            v.id: current.voucher_price.get(v.id, 0.0) if current else 0.0 for v in self.config.vouchers
        }
        out["capacity_prices"] = {  # region id -> yuan per model token / per request, in the slot of now
            r.id: {
                "yuan_per_token": _at(current.token_price.get(r.id), slot) if current else 0.0,
                "yuan_per_request": _at(current.request_price.get(r.id), slot) if current else 0.0,
            }
            for r in self.config.regions
        }
        with self._lock:
            out["token_ratios"] = {
                f"{region}/{model}": {
                    "configured": offer.token_ratio,
                    "estimate": self._ratios.ratio((region, model)),
                    "samples": self._ratios.samples((region, model)),
                    "in_use": self.token_ratios.get((region, model), offer.token_ratio),
                }
                for (region, model), offer in self._offers.items()
                if self._ratios.samples((region, model))
            }
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            reason = self._due()
            if reason is not None:
                self._solve(reason)

    def _due(self) -> str | None:
        # Why a solve is due now, or None.
        if self._last_solve_mono == -float("inf"):
            return "start"
        if self._clock().timestamp() >= self._next_s:
            return "periodic"
        if time.monotonic() - self._last_solve_mono < self._min_gap_s:
            return None  # a poke stays pending until the gap has passed
        if self._poked is not None:
            return self._poked
        if frozenset(self._blocked()) != self._planned_blocked:
            return "health"
        if self._balances_moved(self._balances()):
            return "balance"
        return None

    def _balances_moved(self, now: Mapping[str, float]) -> bool:
        for voucher, planned in self._planned_balances.items():
            current = max(now.get(voucher, 0.0), 0.0)
            if planned > _DRY_UNITS and current <= _DRY_UNITS:
                return True
            if abs(current - planned) > _BALANCE_SHARE * planned:
                return True
        return False

    def _solve(self, reason: str) -> None:
        self._poked = None
        now_s = self._clock().timestamp()
        balances = {v: max(b, 0.0) for v, b in dict(self._balances()).items()}
        blocked = frozenset(self._blocked())
        horizon_s = self.config.planner.horizon_h * 3600.0
        edges = slot_edges(self.config, now_s, now_s + horizon_s)
        demand = self.forecast(edges, now_s)
        # packages: one voucher per period in the horizon (the current one holds what is free
        # now, later ones their amount), daily caps one per day, as the replay plans them
        planned, planned_balances = expand_packages(self.config, now_s, now_s + horizon_s, balances)
        snapshot = Snapshot(
            config=planned,
            now_s=now_s,
            horizon_s=horizon_s,
            balances=planned_balances,
            demand=demand,
            blocked=blocked,
            token_ratios=self.token_ratios,
        )
        started = time.perf_counter()
        self._last_solve_mono = time.monotonic()
        self._next_s = now_s + self.config.planner.replan_s
        self._planned_balances, self._planned_blocked = balances, blocked
        try:
            fresh, scale = self._solve_scaled(snapshot)
        except InfeasibleError as exc:
            log.warning("re-plan (%s) failed, keeping the previous plan: %s", reason, exc)
            self._info = {**self._info, "error": str(exc)}
            return
        except Exception as exc:  # a planner bug must not kill the thread: routing goes on with the old plan
            log.exception("re-plan (%s) crashed, keeping the previous plan", reason)
            self._info = {**self._info, "error": f"{type(exc).__name__}: {exc}"}
            return
        if planned is not self.config:
            fresh = fold_packages(fresh, self.config, now_s)  # by config voucher, as the chooser knows them
        prepare_prices(self.config, fresh)  # here, in the worker, not on the first request
        self.plan = fresh
        self._info = {
            "planned_at": datetime.fromtimestamp(now_s, UTC).isoformat(),
            "solve_ms": round((time.perf_counter() - started) * 1000, 3),
            "plans": self._info["plans"] + 1,
            "reason": reason,
            "error": None,
            "demand_groups": len(demand),
            "forecast_requests": round(sum(d.requests for d in demand), 3),
            "horizon_s": horizon_s,
            "plan_cash_yuan": round(fresh.cash_yuan, 6),
            "demand_scale": scale,
            "blocked": sorted(blocked),  # regions planned without: down (health) or out of cash
        }
        log.debug("re-planned (%s) in %.1f ms", reason, self._info["solve_ms"])

    def _solve_scaled(self, snapshot: Snapshot) -> tuple[Plan, float]:
        # GLOP can end ABNORMAL when the forecast far exceeds the regions' limits (the unserved
        # penalty dwarfs every price). Prices from a scaled-down forecast still rank vouchers
        # and regions; they beat a stale plan, or none.
        failure: InfeasibleError | None = None
        for scale in _DEMAND_SCALES:
            attempt = snapshot if scale == 1.0 else replace(snapshot, demand=_scaled(snapshot.demand, scale))
            try:
                return self._solve_fn(attempt), scale
            except InfeasibleError as exc:
                failure = failure or exc
        raise failure or InfeasibleError("NOT_SOLVED")


def _scaled(demand: tuple[Demand, ...], scale: float) -> tuple[Demand, ...]:
    return tuple(
        replace(d, requests=d.requests * scale, input_tokens=d.input_tokens * scale,
                output_tokens=d.output_tokens * scale)
        for d in demand
    )


def _at(prices: tuple[float, ...] | None, slot: int) -> float:
    return prices[slot] if prices and 0 <= slot < len(prices) else 0.0
