"""The Router's live view of its regions: choosing among the healthy ones, retrying, measuring.

Mixed into ``Router`` (``router/core/router.py``) so the request path there stays one readable
loop: ``_pick`` ranks with what health, latency and limits know right now; ``_send``
makes one attempt and turns its failure into health, cool-down, exhaustion and a voided
hold; ``_measured`` records a served request; ``region_stats`` is what the status API shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from suanli.optimizer import Ask, Option, State, rank
from suanli.providers import Reply, StreamReply, UpstreamCall, UpstreamError, UpstreamTimeout
from suanli.router.core.limits import Lease
from suanli.router.core.results import Routing
from suanli.router.errors import ApiError, NoRouteError, RateLimitedError, UpstreamFailedError
from suanli.router.ledger.sqlite.ledger import Hold

if TYPE_CHECKING:
    from suanli.providers.probe import ProbeResult
    from suanli.router.core.router import Router

__all__ = ["FailoverMixin", "Wait", "is_quota_exhausted"]

Wait = tuple[float, str]  # (seconds until a skipped region frees, why: "limits" | "cooling" | "ejected")

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


class FailoverMixin:
    """Health-, latency- and limit-aware choice, attempts and measurement for ``Router``."""

    async def _start_health(self: Router, base_urls: dict[str, str]) -> None:
        """Reload exhaustion marks from the ledger and start the active probes."""
        marks = self._book.exhausted().values()
        self._cash_exhausted = {str(m["region"]) for m in marks if m["voucher_id"] is None}
        if self.config.health.probes.enabled and self._session is not None:
            from suanli.providers.probe import Prober

            self._prober = Prober(
                self._session, self.config.regions, base_urls, self.config.health.probes, self._probed
            )
            self._prober.start()

    async def _stop_health(self: Router) -> None:
        if self._prober is not None:
            await self._prober.stop()
            self._prober = None

    def _probed(self: Router, result: ProbeResult) -> None:
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

    def _pick(self: Router, ask: Ask, excluded: set[str], waits: list[Wait]) -> tuple[Option, Lease] | None:
        """The best option whose region is healthy and under its limits, with its lease.

        Regions skipped for their limits, cool-down or ejection add to ``waits``, so that
        when nothing is left the client learns how long to wait.
        """
        now_s = self.clock().timestamp()
        state = State(
            balances=self._available,
            blocked=self.health.blocked(now_s),
            latency_ms=self.latency.measured(ask.model, ask.origin, now_s),
            token_ratios=self.planning.token_ratios,
        )
        if excluded:
            ask = replace(ask, excluded=frozenset(excluded))
        for option in rank(self.config, ask, state, self.clock(), plan=self.planning.plan):
            rid = option.region.id
            if rid in self._cash_exhausted and option.charge.cash_yuan > 0:
                continue
            lease = self.limits.acquire(rid, option.charge.tokens)
            if isinstance(lease, Lease):
                return option, lease
            waits.append((lease, "limits"))
        if state.blocked:
            # Nothing left: remember when the regions skipped for cool-down or ejection free up.
            for option in rank(self.config, ask, replace(state, blocked=frozenset()), self.clock()):
                rid = option.region.id
                if rid in state.blocked:
                    why = "ejected" if self.health.regions[rid].ejected_until is not None else "cooling"
                    waits.append((self.health.wait_s(rid, now_s), why))
        return None

    async def _may_retry(self: Router, deadline: float) -> bool:
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

    async def _send(
        self: Router, call: UpstreamCall, hold: Hold, lease: Lease, attempt: int, remaining_s: float
    ) -> Reply | StreamReply:
        """One attempt; on failure the hold is voided, the lease released, health told, and it raises."""
        region = call.region.id
        self.health.sending(region, self.clock().timestamp())
        retrying = attempt > 1
        if retrying:
            self._retrying += 1
        try:
            async with asyncio.timeout(max(remaining_s, 0.001)):
                reply = await self._upstreams[region].send(call)
        except TimeoutError as exc:
            self._attempt_failed(hold, lease, region)
            # Retryable in kind; the loop stops because the deadline has passed.
            raise UpstreamTimeout(region, 0, "the request deadline passed", retryable=True) from exc
        except UpstreamError as exc:
            self._attempt_failed(hold, lease, region, exc)
            raise
        except BaseException:  # cancelled: the caller went away before the first byte
            self._attempt_failed(hold, lease, region)
            self.health.released(region)
            raise
        finally:
            if retrying:
                self._retrying -= 1
        self.health.success(region, self.clock().timestamp())
        return reply

    def _attempt_failed(
        self: Router, hold: Hold, lease: Lease, region: str, exc: UpstreamError | None = None
    ) -> None:
        lease.release()
        voucher_id = hold.voucher_id
        self._void(hold)
        if exc is None:
            return
        self.metrics.failed(region, exc.status)
        now_s = self.clock().timestamp()
        if is_quota_exhausted(exc):
            self._exhausted(region, voucher_id, exc)
        else:
            self.health.failure(region, exc.status, now_s, retry_after_s=exc.retry_after_s)
        log.info("region %s failed (%s): %s", region, exc.status, exc.message)

    def _exhausted(self: Router, region: str, voucher_id: str | None, exc: UpstreamError) -> None:
        """The platform says the prepaid balance is gone: stop drawing on it, on the ledger too."""
        reason = f"{exc.status} {exc.code or ''}: {exc.message}".strip()
        if voucher_id is not None:
            self._available[voucher_id] = 0.0
            self._book.mark_exhausted(voucher_id=voucher_id, reason=reason)
            log.warning("voucher %s at %s is exhausted upstream (%s)", voucher_id, region, reason)
        else:
            self._cash_exhausted.add(region)
            self._book.mark_exhausted(region=region, reason=reason)
            log.warning("prepaid cash at %s is exhausted upstream (%s)", region, reason)

    def clear_exhausted(self: Router, *, voucher_id: str | None = None, region: str | None = None) -> None:
        """After a top-up: draw on that voucher or that region's cash again."""
        self._book.clear_exhausted(voucher_id=voucher_id, region=region)
        if region is not None:
            self._cash_exhausted.discard(region)
        self._available = self._book.balances()

    def _measured(
        self: Router, routing: Routing, ttft_s: float | None, total_s: float | None, lease: Lease
    ) -> None:
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

    def _failed(self: Router, ask: Ask, failures: list[UpstreamError], waits: list[Wait]) -> ApiError:
        if failures:
            return UpstreamFailedError.from_failures(failures)
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
        return NoRouteError(
            f"no region can serve model {ask.model!r} for class {ask.work_class} "
            f"from origin {ask.origin} "
            "right now (latency SLO, capability, policy or capacity)"
        )

    def region_stats(self: Router) -> dict[str, dict]:
        """Region id -> health, measured latency and limit use, JSON-ready (None where unknown).

        Keys: ``state`` ("ok" | "ejected" | "cooling"), ``ejected_until`` (ISO or None),
        ``ejections``, ``ttft_ms``, ``total_ms``, ``tokens_per_s`` and ``probe_ms`` ({"p50", "p95"}),
        ``rpm_used``, ``rpm_limit``, ``tpm_used``, ``tpm_limit``, ``in_flight``,
        ``cash_exhausted``.
        """
        now_s = self.clock().timestamp()
        out: dict[str, dict] = {}
        for region in self.config.regions:
            rid = region.id
            out[rid] = {
                **self.health.state(rid, now_s),
                **self.latency.region_summary(rid),
                **self.limits.stats(rid),
                "cash_exhausted": rid in self._cash_exhausted,
            }
        return out
