"""Per-region request limits: rpm (a sliding log), tpm (per clock minute), concurrency.

A request takes a ``Lease`` on the region the chooser picked; when the region is over any
of its limits the router moves on to the next-best region, and when none can take the
request the client gets 429 with the shortest ``Retry-After``. The lease is released when
the answer is settled (or the attempt failed); the tokens its minute counts are then
corrected from the estimate to the tokens really used.

tpm counts the tokens of the requests *started* in each clock minute of the limiter's clock
(``floor(now_s / 60)``), DESIGN.md's capacity rule, which ``simulate`` and the planner hold
every region to. A token bucket (full at a minute's start, refilling within it) let a region
take up to twice its tpm in one clock minute: a live replay of the cityday day started
twice wuhu's tpm in some minutes, and served requests that ``simulate`` (and ``whatif``'s
base replay of that ledger) had to refuse.

Limits are per router process: each replica keeps its own share of a platform's limits.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from suanli.config import Region

__all__ = ["Lease", "RegionLimits", "RequestLimits", "SlidingLog"]

_MINUTE_S = 60.0


class SlidingLog:
    """At most ``rate_limit`` admissions in any ``period_s`` window, decided without waiting.

    The log asyncio-throttle's ``Throttler`` keeps (times on ``time.monotonic()``, an entry
    leaves once it is more than a period old), but not that class: its public API is
    ``await acquire()``, which waits for room. The chooser needs the answer now, admitted or
    "free in N seconds", to move on to the next-best region, and the status page needs the
    count; neither is public there, so this small class keeps its own log. It also counts on
    the router's clock (``now_s``, monotonic by default), which Throttler cannot: a replay on an
    accelerated virtual clock keeps each region within its rpm per *virtual* minute.
    """

    __slots__ = ("_times", "now_s", "period_s", "rate_limit")

    def __init__(
        self, rate_limit: int, period_s: float = _MINUTE_S, *, now_s: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_limit = rate_limit
        self.period_s = period_s
        self.now_s = now_s
        self._times: deque[float] = deque()  # now_s() of each admission, oldest first

    def count(self) -> int:
        """Admissions logged (those past the window leave at the next ``flush``)."""
        return len(self._times)

    def flush(self) -> None:
        """Drop the admissions older than the period."""
        times = self._times
        now = self.now_s()
        while times and now - times[0] > self.period_s:
            times.popleft()

    def wait_s(self) -> float:
        """0 when there is room now, else the seconds until the oldest admission leaves the window."""
        self.flush()
        times = self._times
        if len(times) < self.rate_limit:
            return 0.0
        return max(times[0] + self.period_s - self.now_s(), 0.001)

    def take(self) -> None:
        """Log one admission now."""
        self._times.append(self.now_s())


@dataclass(slots=True)
class RegionLimits:
    """The limit state of one region. Times are seconds of ``RequestLimits``' monotonic clock."""

    rpm: SlidingLog | None
    tpm: int | None
    concurrency: int | None
    platform_tpm: int | None = None  # the region's own tpm (``tpm`` may be this process's share of it)
    minute: int = 0  # the clock minute ``used`` counts
    used: float = 0.0  # tokens of the requests started in ``minute`` (estimates until settled)
    in_flight: int = 0

    def tokens_used(self, now_s: float) -> float:
        """Tokens started in the clock minute of ``now_s``."""
        minute = math.floor(now_s / _MINUTE_S)
        if minute != self.minute:
            self.minute, self.used = minute, 0.0
        return self.used

    def rpm_used(self) -> int | None:
        if self.rpm is None:
            return None
        self.rpm.flush()
        return self.rpm.count()


class Lease:
    """One admitted attempt on one region; ``release`` exactly once (later calls do nothing)."""

    __slots__ = ("_limits", "_state", "estimate", "minute", "region")

    def __init__(
        self, limits: RequestLimits, region: str, state: RegionLimits, estimate: int, minute: int = 0
    ) -> None:
        self._limits = limits
        self._state: RegionLimits | None = state
        self.region = region
        self.estimate = estimate
        self.minute = minute  # the clock minute its tokens count in

    def release(self, used_tokens: int | None = None) -> None:
        """The attempt is over; ``used_tokens`` corrects the tpm estimate (None: nothing used)."""
        state = self._state
        if state is None:
            return
        self._state = None
        state.in_flight -= 1
        if state.tpm is not None:
            state.tokens_used(self._limits.now_s())  # the tally moves on to this minute
            # the start's minute counts what was really used; a minute already over stays as counted
            if state.minute == self.minute:
                state.used = max(state.used - (self.estimate - (used_tokens or 0)), 0.0)


class RequestLimits:
    """Every region's limits; ``acquire`` is non-blocking."""

    def __init__(self, regions: Iterable[Region], *, now_s: Callable[[], float] = time.monotonic) -> None:
        self.now_s = now_s
        self.regions: dict[str, RegionLimits] = {}
        for region in regions:
            limits = region.limits
            self.regions[region.id] = RegionLimits(
                rpm=SlidingLog(limits.rpm, now_s=now_s) if limits.rpm else None,
                tpm=limits.tpm,
                concurrency=limits.concurrency,
                platform_tpm=limits.tpm,
            )

    def reconfigure(self, regions: Iterable[Region]) -> None:
        """A config reload: new limits apply from now. A known region's state is changed in place,
        so the leases of requests in flight release on it and the minute's use so far counts."""
        fresh = RequestLimits(regions, now_s=self.now_s)
        for rid, new in fresh.regions.items():
            old = self.regions.get(rid)
            if old is None:
                continue
            if new.rpm is not None and old.rpm is not None:
                old.rpm.rate_limit = new.rpm.rate_limit
            else:
                old.rpm = new.rpm
            # the minute's tokens so far still count
            old.tpm, old.concurrency, old.platform_tpm = new.tpm, new.concurrency, new.platform_tpm
            fresh.regions[rid] = old
        self.regions = fresh.regions

    async def stop(self) -> None:
        """Nothing to withdraw: these limits are this process's own (RedisLimits leaves its tally)."""

    def acquire(self, region: str, tokens: int) -> Lease | float:
        """A lease for a request of about ``tokens`` (model tokens), or the seconds to wait."""
        state = self.regions.get(region)
        if state is None:
            return Lease(self, region, RegionLimits(None, None, None), tokens)
        if state.concurrency is not None and state.in_flight >= state.concurrency:
            return 1.0  # a slot frees when an answer ends; a second is an honest guess
        if state.rpm is not None:
            wait_s = state.rpm.wait_s()
            if wait_s:
                return wait_s
        now = self.now_s()
        if state.tpm is not None:
            if self.too_large(region, tokens):
                return math.inf  # no minute may start more than the tpm: waiting never helps
            used = state.tokens_used(now)
            # one bigger than this replica's share of the tpm goes alone in an empty minute
            if used + tokens > state.tpm and used > 0:
                return max((state.minute + 1) * _MINUTE_S - now, 0.001)  # the next minute
            state.used = used + tokens
        if state.rpm is not None:
            state.rpm.take()
        state.in_flight += 1
        return Lease(self, region, state, tokens, state.minute)

    def too_large(self, region: str, tokens: int) -> bool:
        """``tokens`` exceed the region's own tokens per minute: a platform refuses such a request."""
        state = self.regions.get(region)
        limit = None if state is None else (state.platform_tpm or state.tpm)
        return limit is not None and tokens > limit

    def stats(self, region: str) -> dict[str, int | None]:
        """rpm/tpm used in the current minute and the limits, requests in flight."""
        state = self.regions.get(region)
        if state is None:
            return dict.fromkeys(("rpm_used", "rpm_limit", "tpm_used", "tpm_limit", "in_flight"))
        tpm_used = None
        if state.tpm is not None:
            tpm_used = round(state.tokens_used(self.now_s()))
        return {
            "rpm_used": state.rpm_used(),
            "rpm_limit": state.rpm.rate_limit if state.rpm is not None else None,
            "tpm_used": tpm_used,
            "tpm_limit": state.tpm,
            "in_flight": state.in_flight,
        }

    def load(self) -> dict[str, float]:
        """Region id -> share of this minute's rpm/tpm used (the larger), for the chooser's tie-breaks."""
        out: dict[str, float] = {}
        now = self.now_s()
        for rid, state in self.regions.items():
            share = 0.0
            if state.rpm is not None:
                share = state.rpm.count() / state.rpm.rate_limit
            if state.tpm is not None:
                share = max(share, state.tokens_used(now) / state.tpm)
            if share > 0:
                out[rid] = share
        return out
