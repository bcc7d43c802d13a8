"""Measured latency: sliding windows with p50/p95 and an EWMA per (region, model, origin).

Every served request adds what it showed (time to first token, total time, output tokens per
second); active probes add their round trips. The interactive rule (DESIGN.md "The interactive
rule, live") compares an *expected time to first token* with the SLO:

- A first token is measured where one exists: a stream's first chunk. A whole (non-streamed)
  answer has no first token, and its whole time is never taken for one: with the region's
  measured output pace it gives an estimate, ``total - (output - 1) / tokens_per_s``; with no
  pace measured yet it adds no TTFT sample at all.
- The prior (``ttft_ms + rtt_ms[origin]``) is the start of every estimate, and fresh samples
  move it towards their median: ``prior + (p50 - prior) x min(1, n / min_samples)``, so after
  ``min_samples`` samples the measurement alone counts. A region with no samples sits at its
  prior, as every region did before its first sample: lacking samples neither favours a region
  nor condemns one, and one odd sample moves it by only ``1 / min_samples`` of the way.
- Samples older than ``max_age_s`` are dropped, so a region that was slow and stopped getting
  interactive traffic is judged on fresh (batch, probe) samples or on its priors again, and
  comes back.

Recording is an append and an EWMA step; percentiles are sorted only when asked for, and the
chooser's view is rebuilt every few samples, so the request path pays microseconds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

from suanli.config import HealthSettings, Region

__all__ = ["LatencyTracker", "Window", "percentile"]

_RECOMPUTE_EVERY = 8  # samples of a key between two rebuilds of the chooser's view


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (``share`` in 0..1)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(int(share * len(sorted_values) + 0.999999) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


class Window:
    """The last ``size`` samples of one series: an EWMA kept per sample, p50/p95 sorted on demand."""

    __slots__ = ("_p50", "_p95", "_stale", "added", "alpha", "ewma", "size", "times", "values")

    def __init__(self, size: int, alpha: float) -> None:
        self.size = size
        self.alpha = alpha
        self.times: deque[float] = deque()  # clock s of each sample
        self.values: deque[float] = deque()
        self.ewma: float | None = None
        self.added = 0  # samples ever added
        self._p50: float | None = None
        self._p95: float | None = None
        self._stale = False

    def add(self, now_s: float, value: float) -> None:
        self.times.append(now_s)
        self.values.append(value)
        if len(self.values) > self.size:
            self.times.popleft()
            self.values.popleft()
        self.ewma = value if self.ewma is None else self.ewma + self.alpha * (value - self.ewma)
        self.added += 1
        self._stale = True

    def expire(self, oldest_s: float) -> bool:
        """Drop samples taken before ``oldest_s``; True when any went."""
        times = self.times
        dropped = False
        while times and times[0] < oldest_s:
            times.popleft()
            self.values.popleft()
            dropped = True
        self._stale = self._stale or dropped
        return dropped

    def _refresh(self) -> None:
        self._stale = False
        if not self.values:
            self._p50 = self._p95 = None
            return
        ordered = sorted(self.values)
        self._p50 = percentile(ordered, 0.50)
        self._p95 = percentile(ordered, 0.95)

    @property
    def p50(self) -> float | None:
        if self._stale:
            self._refresh()
        return self._p50

    @property
    def p95(self) -> float | None:
        if self._stale:
            self._refresh()
        return self._p95

    def __len__(self) -> int:
        return len(self.values)

    def summary(self) -> dict[str, float | None]:
        return {"p50": _round(self.p50), "p95": _round(self.p95)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# (region id, model, origin) -> window
Key = tuple[str, str, str]


class LatencyTracker:
    """Every latency window of the router, and the measured latency the chooser is fed."""

    def __init__(
        self, regions: Iterable[Region], settings: HealthSettings, *, trust_sims: bool = True
    ) -> None:
        latency = settings.latency
        self._size = latency.window
        self._alpha = latency.ewma_alpha
        self.min_samples = latency.min_samples
        self.max_age_s = latency.max_age_s
        self._regions = {r.id: r for r in regions}
        # Sims run with a latency scale other than 1 (tests, benchmarks) time nothing real.
        self._trust_sims = trust_sims
        self.ttft: dict[Key, Window] = {}
        self.total: dict[Key, Window] = {}
        self.tokens_per_s: dict[Key, Window] = {}
        # Per region, all models and origins together: what the status API shows.
        self.region_ttft: dict[str, Window] = {}
        self.region_total: dict[str, Window] = {}
        self.region_tokens_per_s: dict[str, Window] = {}
        self.probe_ms: dict[str, Window] = {}  # region id -> probe round trips
        # (model, origin) -> {region id -> measured ms for the interactive rule}; rebuilt lazily
        self._measured: dict[tuple[str, str], dict[str, float]] = {}
        self._next_expiry_s = 0.0

    def reconfigure(self, regions: Iterable[Region]) -> None:
        """A config reload: the regions' priors now; measurements are kept."""
        self._regions = {r.id: r for r in regions}
        self._measured = {}

    def _window(self, table: dict, key: object) -> Window:
        window = table.get(key)
        if window is None:
            window = table[key] = Window(self._size, self._alpha)
        return window

    def record(
        self,
        region: str,
        model: str,
        origin: str,
        now_s: float,
        *,
        ttft_ms: float | None,
        total_ms: float | None = None,
        output_tokens: int = 0,
    ) -> None:
        """One served request as the router saw it (``ttft_ms`` None: no first token measured,
        as for a whole answer; it is then estimated from ``total_ms`` and the measured pace)."""
        key = (region, model, origin)
        measured_ttft = ttft_ms is not None
        if ttft_ms is None and total_ms is not None and output_tokens >= 1:
            ttft_ms = self._ttft_estimate(key, total_ms, output_tokens)
        if ttft_ms is not None:
            window = self._window(self.ttft, key)
            window.add(now_s, ttft_ms)
            # The chooser's view is rebuilt every few samples, not on every one; but at once
            # while the window is short, and when a sample is above what the chooser has (the
            # region may be turning slow: that must be noticed now, recovery may wait).
            view = self._measured.get((model, origin))
            if (
                view is None
                or len(window) <= _RECOMPUTE_EVERY
                or window.added % _RECOMPUTE_EVERY == 0
                or len(window) == self.min_samples
                or ttft_ms > view.get(region, math.inf)
            ):
                self._measured.pop((model, origin), None)
            self._window(self.region_ttft, region).add(now_s, ttft_ms)
        if total_ms is not None:
            self._window(self.total, key).add(now_s, total_ms)
            self._window(self.region_total, region).add(now_s, total_ms)
            if measured_ttft and output_tokens > 1 and total_ms > ttft_ms:
                rate = (output_tokens - 1) * 1000.0 / (total_ms - ttft_ms)
                self._window(self.tokens_per_s, key).add(now_s, rate)
                self._window(self.region_tokens_per_s, region).add(now_s, rate)

    def _ttft_estimate(self, key: Key, total_ms: float, output_tokens: int) -> float | None:
        """A whole answer's time to first token: its total less the time its output took at the
        pace measured on streams (of this key, else of the region); None with no pace known."""
        pace = self.tokens_per_s.get(key) or self.region_tokens_per_s.get(key[0])
        rate = pace.p50 if pace is not None else None
        if not rate:
            return None
        estimate = total_ms - (output_tokens - 1) * 1000.0 / rate
        return estimate if estimate > 0 else None

    def record_probe(self, region: str, now_s: float, round_trip_ms: float) -> None:
        self._window(self.probe_ms, region).add(now_s, round_trip_ms)

    def measured(self, model: str, origin: str, now_s: float) -> Mapping[str, float]:
        """Region id -> expected time to first token (ms) as seen from ``origin``.

        Regions with fresh samples appear, each at its prior pulled towards the median of
        its samples (the module docstring); the others keep their priors in the chooser. A
        sim on loopback has no network distance, so its ``rtt_ms`` prior is added to what
        was measured.
        """
        if now_s >= self._next_expiry_s:
            self._expire(now_s)
        found = self._measured.get((model, origin))
        if found is None:
            found = self._measured[(model, origin)] = self._build(model, origin)
        return found

    def _build(self, model: str, origin: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (region_id, m, o), window in self.ttft.items():
            if m != model or o != origin or not len(window):
                continue
            region = self._regions.get(region_id)
            median = window.p50
            if region is None or median is None:
                continue
            distance = 0.0
            if region.provider == "sim":
                if not self._trust_sims:
                    continue
                distance = region.rtt_ms.get(origin, 0.0)
            prior = region.latency_ms(origin)  # type: ignore[arg-type]
            trust = min(1.0, len(window) / self.min_samples)
            out[region_id] = prior + (median + distance - prior) * trust
        return out

    def _expire(self, now_s: float) -> None:
        # At most once a second: a scan of every window is cheap but not free.
        self._next_expiry_s = now_s + 1.0
        oldest = now_s - self.max_age_s
        for key, window in self.ttft.items():
            if window.expire(oldest):
                self._measured.pop((key[1], key[2]), None)
        for table in (self.total, self.tokens_per_s, self.region_ttft, self.region_total,
                      self.region_tokens_per_s, self.probe_ms):
            for window in table.values():
                window.expire(oldest)

    def region_summary(self, region: str) -> dict[str, dict[str, float | None]]:
        """``{"ttft_ms": {"p50", "p95"}, "total_ms", "tokens_per_s", "probe_ms"}``, all models and origins."""
        tables = {"ttft_ms": self.region_ttft, "total_ms": self.region_total,
                  "tokens_per_s": self.region_tokens_per_s, "probe_ms": self.probe_ms}
        out: dict[str, dict[str, float | None]] = {}
        for name, table in tables.items():
            window = table.get(region)
            out[name] = window.summary() if window is not None else {"p50": None, "p95": None}
        return out
