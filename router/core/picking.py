"""RegionPicker: the Router's live view of its regions, choosing among the healthy ones, retrying, measuring.

The Router composes one picker so its request path stays one readable loop: ``pick`` ranks
with what health, latency, limits and the free balances know right now; ``may_retry`` keeps
the retry budget; ``send`` makes one attempt and turns its failure into health, cool-down,
exhaustion and a voided hold; ``measured`` records a served request; ``failed`` maps what
went wrong to the error the client gets; ``region_stats`` is what the status API shows.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

import aiohttp

from suanli.config import Config
from suanli.optimizer import Ask, Option, State, rank
from suanli.providers import Reply, StreamReply, Upstream, UpstreamCall, UpstreamError, UpstreamTimeout
from suanli.router.core.accounts import Accounts
from suanli.router.core.clocks import clock_speed
from suanli.router.core.controls import NO_CONTROLS, Controls, arranged, option_price, price_error
from suanli.router.core.exclusions import exclusions, no_route_error
from suanli.router.core.health import Health
from suanli.router.core.latency import LatencyTracker
from suanli.router.core.limits import Lease, RequestLimits
from suanli.router.core.metrics import MetricsBook
from suanli.router.core.planning import Replanner
from suanli.router.core.results import Routing
from suanli.router.core.sessions import SessionBook, Visit, prefer_cached
from suanli.router.errors import (
    ApiError,
    NoRouteError,
    RateLimitedError,
    RequestTooLargeError,
    UpstreamFailedError,
)
from suanli.router.ledger.types import Hold

if TYPE_CHECKING:
    from suanli.providers.probe import Prober, ProbeResult

__all__ = ["RegionPicker", "Wait", "is_quota_exhausted"]

# (seconds until a skipped region frees, why: "limits" | "cooling" | "ejected" | "too_large")
Wait = tuple[float, str]

log = logging.getLogger("suanli.failover")

# Upstream error codes that mean "your prepaid balance here is gone", besides HTTP 402.
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "quota_exceeded",
        "insufficient_balance",
        "arrearage",
        "Arrearage",
        "billing_hard_limit_reached",
    }
)


def is_quota_exhausted(exc: UpstreamError) -> bool:
    """A 402, or a provider's quota error (some answer 429 or 403 with such a code)."""
    return exc.status == 402 or (exc.code in _QUOTA_CODES and exc.status in (400, 403, 429))


class RegionPicker:
    """Health-, latency- and limit-aware choice, attempts and measurement; one per Router."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime],
        accounts: Accounts,
        planning: Replanner,
        metrics: MetricsBook,
        trust_sims: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.accounts = accounts
        self.planning = planning
        self.metrics = metrics
        self.health = Health((r.id for r in config.regions), config.health)
        self.latency = LatencyTracker(config.regions, config.health, trust_sims=trust_sims)
        # Limits count per minute of the router's clock: on a virtual clock (a replay) per virtual
        # minute, as simulate counts them; on the wall clock, monotonic seconds.
        now_s = (lambda: clock().timestamp()) if clock_speed(clock) != 1.0 else time.monotonic
        self.limits: RequestLimits = RequestLimits(config.regions, now_s=now_s)  # RedisLimits when shared
        self._active = 0  # requests before their first byte, for the retry budget
        self._retrying = 0  # of which on a second or later attempt
        self._prober: Prober | None = None
        self.sessions = SessionBook()  # conversation -> where its prompt was last sent (cache affinity)

    def reconfigure(self, config: Config) -> None:
        """A config reload: rank on ``config`` from the next pick; health and latency learned are kept."""
        self.health.add(r.id for r in config.regions)
        self.latency.reconfigure(config.regions)
        # RedisLimits too (its local states; the limits it shares through Redis stay until a restart).
        self.limits.reconfigure(config.regions)
        if self.accounts.replica is not None:  # on a shared ledger: its share of the new limits
            self.accounts.replica.reconfigure(config)
        self.config = config

    def start_probes(self, session: aiohttp.ClientSession | None, base_urls: dict[str, str]) -> None:
        """Start the active probes (when the config enables them and there is a session)."""
        if self.config.health.probes.enabled and session is not None:
            from suanli.providers.probe import Prober

            probes = self.config.health.probes
            self._prober = Prober(session, self.config.regions, base_urls, probes, self._probed)
            self._prober.start()

    async def stop_probes(self) -> None:
        if self._prober is not None:
            await self._prober.stop()
            self._prober = None

    def _probed(self, result: ProbeResult) -> None:
        """A probe's answer: a latency sample when it worked, a health signal either way."""
        now_s = self.clock().timestamp()
        if not result.ok:
            self.health.failure(result.region, result.status, now_s)
            return
        self.latency.record_probe(result.region, now_s, result.round_trip_ms)
        if result.mode == "completion":
            region = self.config.region(result.region)
            if region is not None:
                model = region.models[0].name
                origin = self.config.origin
                self.latency.record(result.region, model, origin, now_s, ttft_ms=result.round_trip_ms)
        self.health.success(result.region, now_s)

    def unhealthy(self) -> frozenset[str]:
        """Regions down now, or whose prepaid cash is gone: the planner plans without them.

        Read by the re-planner's thread: ``wait_s`` only reads, unlike ``blocked()``, which caches.
        """
        now_s = self.clock().timestamp()
        down = frozenset(r.id for r in self.config.regions if self.health.wait_s(r.id, now_s) > 0)
        return down | frozenset(self.accounts.cash_exhausted)

    def down(self) -> frozenset[str]:
        """Regions out now: ejected by health, or their prepaid cash gone (a 429's cool-down is not)."""
        now_s = self.clock().timestamp()
        health = self.health.regions
        ejected = {r.id for r in self.config.regions if r.id in health and health[r.id].ejected(now_s)}
        return frozenset(ejected) | frozenset(self.accounts.cash_exhausted)

    def pick(
        self,
        ask: Ask,
        excluded: set[str],
        waits: list[Wait],
        controls: Controls = NO_CONTROLS,
        priced: list[tuple[float, str]] | None = None,
        *,
        stream: bool = False,
        visit: Visit | None = None,
        at: datetime | None = None,
        share: float | None = None,
    ) -> tuple[Option, Lease] | None:
        """The best option whose region is healthy and under its limits, with its lease.

        Regions skipped for their limits, cool-down or ejection add to ``waits``, so that
        when nothing is left the client learns how long to wait. The request's ``controls``
        reorder the ranking (``sort``, ``session``) and drop the options over its price cap,
        each added to ``priced`` as ``(price, region)``. A ``stream`` avoids regions whose
        streams broke lately (``Health.stream_blocked``) unless no other region is left. A
        conversation's ``visit`` (``sessions.py``) prices its prompt cache where it was last sent.
        ``at`` is the request's start, which prices it (default: now). ``share`` < 1 (a normal
        key while supply is short, ``shedding.py``) skips a region whose rpm/tpm this minute is
        used past it, as if at its limits.
        """
        if stream:
            avoid = self.health.stream_blocked(self.clock().timestamp()) - excluded
            if avoid:
                picked = self._pick(ask, excluded | avoid, [], controls, None, visit, at, share)
                if picked is not None:
                    return picked
        return self._pick(ask, excluded, waits, controls, priced, visit, at, share)

    def _pick(
        self,
        ask: Ask,
        excluded: set[str],
        waits: list[Wait],
        controls: Controls,
        priced: list[tuple[float, str]] | None,
        visit: Visit | None = None,
        at: datetime | None = None,
        share: float | None = None,
    ) -> tuple[Option, Lease] | None:
        now_s = self.clock().timestamp()  # health and limits: now; the price: the request's start
        now = at or self.clock()
        state = State(
            balances=self.accounts.free(),
            blocked=self.health.blocked(now_s),
            latency_ms=self.latency.measured(ask.model, ask.origin, now_s),
            token_ratios=self.planning.token_ratios,
        )
        if excluded:
            ask = replace(ask, excluded=frozenset(excluded))
        cash_exhausted = self.accounts.cash_exhausted
        options = rank(self.config, ask, state, now, plan=self.planning.plan)
        if visit is not None and controls.sort == "cost":
            options = prefer_cached(options, ask, visit, now.timestamp())
        if controls is not NO_CONTROLS:
            options = arranged(options, ask, controls, latency_ms=state.latency_ms)
        cap = controls.max_price_yuan_per_mtok
        for option in options:
            rid = option.region.id
            if rid in cash_exhausted and option.charge.cash_yuan > 0:
                continue
            if cap is not None:
                price = option_price(option, ask)
                if price > cap:
                    if priced is not None:
                        priced.append((price, rid))
                    continue
            if share is not None and self.limits.load().get(rid, 0.0) >= share:
                waits.append((1.0, "limits"))  # the rest of the region is kept for critical work
                continue
            lease = self.limits.acquire(rid, option.charge.tokens)
            if isinstance(lease, Lease):
                return option, lease
            waits.append((lease, "too_large" if math.isinf(lease) else "limits"))
        if state.blocked:
            # Nothing left: remember when the regions skipped for cool-down or ejection free up.
            for option in rank(self.config, ask, replace(state, blocked=frozenset()), now):
                rid = option.region.id
                if rid in state.blocked:
                    why = "ejected" if self.health.regions[rid].ejected_until is not None else "cooling"
                    waits.append((self.health.wait_s(rid, now_s), why))
        return None

    def entered(self) -> None:
        """A request starts looking for a region: it counts in the retry budget's base."""
        self._active += 1

    def left(self) -> None:
        """The request got its first byte, or gave up."""
        self._active -= 1

    async def may_retry(self, deadline: float) -> bool:
        """Within the request's deadline and the retry budget (a share of requests in flight).

        Over budget, a retry waits up to ``budget_wait_s`` for a slot rather than failing:
        when a region stalls, every request on it times out at once, and the budget should
        pace those retries, not drop them; when everything fails it still caps the load.
        """
        retry = self.config.health.retry
        give_up = min(deadline, time.perf_counter() + retry.budget_wait_s)
        while self._retrying >= max(retry.min_retries, retry.budget_share * self._active):
            if time.perf_counter() >= give_up:
                log.info("retry budget spent: %d retries for %d requests", self._retrying, self._active)
                return False
            await asyncio.sleep(0.005)
        return time.perf_counter() < deadline

    async def send(
        self,
        upstream: Upstream,
        call: UpstreamCall,
        hold: Hold,
        lease: Lease,
        attempt: int,
        remaining_s: float,
    ) -> Reply | StreamReply:
        """One attempt; on failure the lease is released, health told, and it raises.

        The hold is voided unless the failure is in doubt (the upstream had the request and
        never answered) or the caller was cancelled meanwhile: the Router settles those.
        """
        region = call.region.id
        self.health.sending(region, self.clock().timestamp())
        retrying = attempt > 1
        if retrying:
            self._retrying += 1
        try:
            async with asyncio.timeout(max(remaining_s, 0.001)):
                reply = await upstream.send(call)
        except TimeoutError as exc:
            # Retryable in kind; the loop stops because the deadline has passed. The call was
            # out, so the upstream may be generating it: in doubt.
            timeout = UpstreamTimeout(region, 0, "the request deadline passed", retryable=True, in_doubt=True)
            lease.release()
            raise timeout from exc
        except UpstreamError as exc:
            self._attempt_failed(hold, lease, region, exc)
            raise
        except BaseException:  # cancelled: the caller went away while the upstream had the call
            lease.release()
            self.health.released(region)
            raise
        finally:
            if retrying:
                self._retrying -= 1
        self.health.success(region, self.clock().timestamp())
        return reply

    def _attempt_failed(
        self, hold: Hold, lease: Lease, region: str, exc: UpstreamError | None = None
    ) -> None:
        lease.release()
        if exc is None or not exc.in_doubt:
            self.accounts.void(hold)
        if exc is None:
            return
        self.metrics.failed(region, exc.status)
        now_s = self.clock().timestamp()
        if is_quota_exhausted(exc):
            reason = f"{exc.status} {exc.code or ''}: {exc.message}".strip()
            self.accounts.mark_exhausted(region, hold.voucher_id, reason)
        else:
            self.health.failure(region, exc.status, now_s, retry_after_s=exc.retry_after_s)
        log.info("region %s failed (%s): %s", region, exc.status, exc.message)

    def measured(self, routing: Routing, ttft_s: float | None, total_s: float | None, lease: Lease) -> None:
        """Record a served request's latency and release its lease with the tokens really used."""
        lease.release(routing.prompt_tokens + routing.completion_tokens)
        self.latency.record(
            routing.region,
            routing.model,
            routing.origin,
            self.clock().timestamp(),
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None,
            total_ms=total_s * 1000 if total_s is not None else None,
            output_tokens=routing.completion_tokens,
        )

    def failed(
        self,
        ask: Ask,
        failures: list[UpstreamError],
        waits: list[Wait],
        priced: list[tuple[float, str]] | None = None,
        cap: float | None = None,
    ) -> ApiError:
        """The error for a request no region served: the upstreams' failures, a wait, every region
        over the request's price cap, or no route."""
        if failures:
            return UpstreamFailedError.from_failures(failures)
        if waits and all(why == "too_large" for _, why in waits):
            return RequestTooLargeError(
                f"the request (with its max_tokens) is larger than the tokens-per-minute limit of every"
                f" region that can serve model {ask.model!r}: lower max_tokens or shorten the prompt",
                param="max_tokens",
            )
        waits = [w for w in waits if w[1] != "too_large"]
        if priced and cap is not None and not waits:
            return price_error(ask, cap, min(priced))
        if waits:
            wait_s = max(min(seconds for seconds, _ in waits), 1.0)
            if all(why == "ejected" for _, why in waits):
                return NoRouteError(
                    f"every region that can serve model {ask.model!r} is ejected after failures",
                    code="no_healthy_region",
                    retry_after_s=wait_s,
                )
            return RateLimitedError(
                f"every region that can serve model {ask.model!r} is at its limits or cooling down "
                f"after 429s; retry in {wait_s:.0f} s",
                retry_after_s=wait_s,
            )
        now_s = self.clock().timestamp()
        found = exclusions(
            self.config,
            ask,
            latency_ms=self.latency.measured(ask.model, ask.origin, now_s),
            cash_exhausted=frozenset(self.accounts.cash_exhausted),
        )
        return no_route_error(ask, found)

    def region_stats(self) -> dict[str, dict]:
        """Region id -> health, measured latency and limit use, JSON-ready (None where unknown).

        Keys: ``state`` ("ok" | "ejected" | "cooling"), ``ejected_until`` (ISO or None),
        ``ejections``, ``ttft_ms``, ``total_ms``, ``tokens_per_s`` and ``probe_ms`` ({"p50", "p95"}),
        ``rpm_used``, ``rpm_limit``, ``tpm_used``, ``tpm_limit``, ``in_flight``,
        ``cash_exhausted``, and ``interactive_ttft_ms``: the first token the chooser expects of
        the region (its first model) for the config's origin, which the interactive SLO judges.
        """
        now_s = self.clock().timestamp()
        origin = self.config.origin
        out: dict[str, dict] = {}
        for region in self.config.regions:
            rid = region.id
            view = self.latency.measured(region.models[0].name, origin, now_s)
            out[rid] = {
                **self.health.state(rid, now_s),
                **self.latency.region_summary(rid),
                **self.limits.stats(rid),
                "cash_exhausted": rid in self.accounts.cash_exhausted,
                "interactive_ttft_ms": round(view.get(rid, region.latency_ms(origin)), 1),
                "streams_avoided": rid in self.health.stream_blocked(now_s),
            }
        return out
