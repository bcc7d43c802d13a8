"""Demand forecast learned online: request rate and size per (class, origin, model, local hour).

Each kind of request keeps counts per hour of the local day and the seconds of that hour
observed so far. The rate of an hour is its own count over its exposure, shrunk towards
the kind's overall rate while the hour is thinly observed (a pseudo-exposure of
``blend_s``). A config prior (``Config.demand``) enters as pseudo-observations worth
``prior_s`` seconds, so a cold start plans with it and the traffic seen takes over.
Expected demand of work that may wait is weighted by ``1 / (1 + lead / lead_decay_s)``
(``LEAD_DECAY_S`` by default): the further out, the less it is trusted. With ``end_s`` no arrival is expected
after it (a replayed trace ends; a live proxy leaves it at infinity and its horizon rolls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from suanli.config import Config, WorkClass, Zone
from suanli.optimizer.hindsight import output_bucket
from suanli.optimizer.index import index_for
from suanli.optimizer.snapshot import Demand, Job

__all__ = ["LEAD_DECAY_S", "Forecast", "WORKING_DAY"]

_HOUR_S = 3600.0
Kind = tuple[WorkClass, Zone, str]  # (class, origin, model)


_MIX_BANDS = 3  # output-share bands: a tokens voucher is worth more on output-heavy requests
# Relative arrival rate per local hour of a kind the config gives no prior for: people
# work by day. Only the shape matters (the level is learned), and only until an hour has
# been observed; pass a flat tuple to turn it off. Assuming a busy day ahead is the safe
# side: a voucher kept for traffic that stays away is spent later, one spent at night on
# cheap work is gone when the day comes.
WORKING_DAY = (
    0.2, 0.2, 0.2, 0.2, 0.2, 0.25, 0.35, 0.6, 1.0, 1.4, 1.4, 1.4,
    1.3, 1.3, 1.4, 1.4, 1.4, 1.2, 1.0, 0.9, 0.75, 0.6, 0.45, 0.3,
)  # fmt: skip
_MIN_SHAPE = 0.05
# A day's shape is a guess until its hours are seen: an evening peak read against office
# hours made the forecast expect 2-2.6 times the night and morning traffic that came (random
# day 22), and vouchers valid past the trace were kept for it; training jobs expected hours
# ahead kept theirs (day 12). Demand 12 h out counts half. Random seeds 0-39 without shocks:
# cash/bound mean 1.104 -> 1.085, p95 1.541 -> 1.239 (day 12 21.22 -> 14.82 yuan, 22 5.33 ->
# 4.91; dearer: 2 7.67 -> 7.97). A level correction (arrivals over what earlier forecasts
# expected, scaling the hours ahead) tracked the rest of the day worse and was not kept.
LEAD_DECAY_S = 12 * 3600.0
_FLAT = (1.0,) * 24
_RECENT_EVENTS = 10.0  # recent arrivals at which the recent rate gets half the weight
_DEFER_BLOCK_S = 3 * _HOUR_S  # work that may wait is forecast in blocks this long: its hour matters little
# Training jobs are few and large: one seen in the first hour is not a rate of twenty a day.
# Their rate is never read off less than this exposure, nor from the recent arrivals: a
# training voucher kept for jobs a single sighting implies is left unspent when none come.
RARE_EXPOSURE_S: dict[str, float] = {"training": 86400.0}


@dataclass(slots=True)
class _Tally:
    requests: list[float] = field(default_factory=lambda: [0.0] * 24)  # per local hour
    total: float = 0.0
    level: float = 0.0  # arrivals, each divided by the shape of its hour
    recent: float = 0.0  # arrivals over their hour's shape, decayed by exp(-age / recent_s)
    raw_recent: float = 0.0  # arrivals decayed alike, unweighted
    recent_at: float = 0.0
    window_s: float = 0.0  # summed start windows (deadline) of the requests seen
    # per output-share band: requests, input tokens, output tokens
    band_requests: list[float] = field(default_factory=lambda: [0.0] * _MIX_BANDS)
    band_input: list[float] = field(default_factory=lambda: [0.0] * _MIX_BANDS)
    band_output: list[float] = field(default_factory=lambda: [0.0] * _MIX_BANDS)
    band_cached: list[float] = field(default_factory=lambda: [0.0] * _MIX_BANDS)  # a session's repeated input


class Forecast:
    """Online forecast of the demand ahead; mutable, fed by ``observe``, read by ``demand``.

    Not thread-safe by itself: the re-planner calls it from one thread at a time.
    """

    def __init__(
        self,
        config: Config,
        *,
        start_s: float,
        blend_s: float = 3600.0,
        prior_s: float = 3600.0,
        lead_decay_s: float = LEAD_DECAY_S,
        recent_s: float = 3600.0,
        end_s: float = float("inf"),
        shape: tuple[float, ...] = WORKING_DAY,
    ) -> None:
        self._config = config
        self._index = index_for(config)
        self._start_s = start_s
        self._blend_s = blend_s
        self._prior_s = prior_s
        self._lead_decay_s = lead_decay_s
        self._end_s = end_s
        self._recent_s = recent_s
        self._tallies: dict[Kind, _Tally] = {}
        self._shape = _normalized(shape)
        self._prior: dict[Kind, tuple[float, tuple[float, ...], float, float, float]] = {}
        for p in config.demand:
            deadline = p.deadline_s or (
                0.0 if p.work_class == "interactive" else config.classes.deadline_s(p.work_class)
            )
            self._prior[(p.work_class, p.origin, p.model)] = (
                p.requests_per_hour / _HOUR_S,
                _normalized(p.hourly or (1.0,) * 24),
                p.input_tokens,
                p.output_tokens,
                deadline,
            )

    def observe(
        self,
        kind: Kind,
        *,
        input_tokens: float,
        output_tokens: float,
        window_s: float,
        at_s: float,
        cached_tokens: float = 0.0,
    ) -> None:
        """Count one request of ``kind`` arriving at ``at_s`` with start window ``window_s``.

        ``cached_tokens``: of its input, those repeating its session's previous prompt; the
        demand ahead expects the same share of cache hits (``Demand.cached_tokens``).
        """
        tally = self._tallies.get(kind)
        if tally is None:
            tally = self._tallies[kind] = _Tally()
        hour = self._hour(at_s)
        tally.requests[hour] += 1
        tally.total += 1
        # Counted against the hour's shape, a busy hour's arrivals say as much about the
        # day's level as a quiet hour's.
        weight = 1.0 / max(self._shape_of(kind)[hour], _MIN_SHAPE)
        tally.level += weight
        fade = math.exp((tally.recent_at - at_s) / self._recent_s)
        tally.recent = tally.recent * fade + weight
        tally.raw_recent = tally.raw_recent * fade + 1.0
        tally.recent_at = at_s
        tally.window_s += window_s
        band = output_bucket(input_tokens, output_tokens, _MIX_BANDS)
        tally.band_requests[band] += 1
        tally.band_input[band] += input_tokens
        tally.band_output[band] += output_tokens
        tally.band_cached[band] += cached_tokens

    def observe_job(self, job: Job, at_s: float | None = None) -> None:
        """``observe`` a known request: its kind, tokens, cache share and start window, seen at
        ``at_s`` (its arrival by default)."""
        self.observe(
            (job.work_class, job.origin, job.model),
            input_tokens=job.input_tokens,
            output_tokens=job.output_tokens,
            window_s=job.latest_s - job.arrival_s,
            at_s=job.arrival_s if at_s is None else at_s,
            cached_tokens=job.cached,
        )

    def rate_per_s(self, kind: Kind, at_s: float, now_s: float) -> float:
        """Expected arrivals per second of ``kind`` at ``at_s``, as known at ``now_s``.

        Without a config prior, two forecasts are mixed by how well each explains the
        hours seen so far (their Poisson likelihoods): one following the working-day
        shape, one flat. Traffic that keeps no office hours is soon forecast flat.
        """
        hour = self._hour(at_s)
        if kind in self._prior:
            return self._rate(kind, hour, now_s, self._prior[kind][1], shaped=True)
        # A rare kind is forecast flat: one training job seen at night, counted against the
        # working-day shape, was read as four a day, and vouchers were kept for them.
        weight = 0.0 if kind[0] in RARE_EXPOSURE_S else self._shape_weight(kind, now_s)
        shaped = self._rate(kind, hour, now_s, self._shape, shaped=True) if weight > 0 else 0.0
        flat = self._rate(kind, hour, now_s, _FLAT, shaped=False) if weight < 1 else 0.0
        return weight * shaped + (1.0 - weight) * flat

    def _rate(self, kind: Kind, hour: int, now_s: float, shape: tuple[float, ...], *, shaped: bool) -> float:
        # the blended hourly estimate of the module docstring, with ``shape`` over the day
        observed_s = max(now_s - self._start_s, 0.0)
        tally = self._tallies.get(kind)
        prior = self._prior.get(kind)
        count = (tally.level if shaped else tally.total) if tally else 0.0
        exposure = observed_s
        if prior is not None:
            count += prior[0] * self._prior_s
            exposure += self._prior_s
        if exposure <= 0 or count <= 0:
            return 0.0
        # Short exposures overstate a burst: never divide by less than ten minutes.
        rare_s = RARE_EXPOSURE_S.get(kind[0], 0.0)
        overall = count / max(exposure, 600.0, rare_s)
        if tally is not None and observed_s > 0 and not rare_s:
            # The level moves within a day (a working day ramps up and down): track the
            # recent rate, trusting it as it holds more arrivals than _RECENT_EVENTS.
            decay = math.exp(-observed_s / self._recent_s)
            fade = math.exp((tally.recent_at - now_s) / self._recent_s)
            recent = (tally.recent if shaped else tally.raw_recent) * fade
            recent_exposure = max(self._recent_s * (1.0 - decay), 600.0)
            seen = tally.raw_recent * fade  # arrivals behind ``recent``, roughly
            weight = seen / (seen + _RECENT_EVENTS)
            overall = weight * recent / recent_exposure + (1.0 - weight) * overall
        if rare_s:
            return overall * shape[hour]  # an hour with one rare arrival says nothing of that hour
        hour_exposure = self._hour_exposure(hour, now_s)
        hour_count = tally.requests[hour] if tally else 0.0
        return (hour_count + self._blend_s * overall * shape[hour]) / (hour_exposure + self._blend_s)

    def _shape_weight(self, kind: Kind, now_s: float) -> float:
        # Posterior weight of the working-day shape against a flat day, even odds at first:
        # log likelihood ratio of the hourly counts seen, each model at its best level.
        tally = self._tallies.get(kind)
        if tally is None or tally.total <= 0:
            return 0.5
        counts, shape = tally.requests, self._shape
        exposures = [self._hour_exposure(h, now_s) for h in range(24)]
        seen = [h for h in range(24) if exposures[h] > 0]
        total = sum(counts[h] for h in seen)
        flat_exposure = sum(exposures[h] for h in seen)
        shaped_exposure = sum(shape[h] * exposures[h] for h in seen)
        if total <= 0 or shaped_exposure <= 0:
            return 0.5
        ratio = sum(counts[h] * math.log(max(shape[h], _MIN_SHAPE)) for h in seen) + total * math.log(
            flat_exposure / shaped_exposure
        )
        return 1.0 / (1.0 + math.exp(-max(min(ratio, 50.0), -50.0)))

    def demand(self, edges: tuple[float, ...], now_s: float) -> tuple[Demand, ...]:
        """Expected demand per kind, output-share band and slot of ``edges`` from ``now_s`` on.

        Interactive demand is per slot (it must start in it); work that may wait is per
        block of slots about ``_DEFER_BLOCK_S`` long, its window running to the block's
        end plus the kind's mean start window.
        """
        out: list[Demand] = []
        for kind in sorted(set(self._tallies) | set(self._prior)):
            mix = self._mix(kind)
            if not mix:
                continue
            interactive = kind[0] == "interactive"
            window_s = self._window(kind)
            for begin, end in self._periods(edges, now_s, per_slot=interactive):
                requests = self._expected(kind, begin, end, now_s)
                if requests <= 1e-9:
                    continue
                for share, input_tokens, output_tokens, cached_tokens in mix:
                    n = requests * share
                    out.append(
                        Demand(
                            work_class=kind[0],
                            origin=kind[1],
                            model=kind[2],
                            earliest=begin,
                            latest=end - 1e-3 if interactive else end + window_s,
                            requests=n,
                            input_tokens=n * input_tokens,
                            output_tokens=n * output_tokens,
                            cached_tokens=n * cached_tokens,
                        )
                    )
        return tuple(out)

    @property
    def end_s(self) -> float:
        """No arrival is expected after this (epoch s; infinite for a live proxy)."""
        return self._end_s

    def arrivals(self, kind: Kind, begin_s: float, end_s: float, now_s: float) -> float:
        """Requests of ``kind`` expected to arrive in ``[begin_s, end_s)``, as known at ``now_s``."""
        return self._expected(kind, begin_s, end_s, now_s) if end_s > begin_s else 0.0

    def sizes(self, work_class: WorkClass) -> list[tuple[Kind, float, float]]:
        """``(kind, mean input tokens, mean start window s)`` of each kind of ``work_class`` known so far."""
        out = []
        for kind in sorted(set(self._tallies) | set(self._prior)):
            mix = self._mix(kind)
            if kind[0] != work_class or not mix:
                continue
            mean_input = sum(share * input_tokens for share, input_tokens, _, _ in mix)
            out.append((kind, mean_input, self._window(kind)))
        return out

    def _expected(self, kind: Kind, begin: float, end: float, now_s: float) -> float:
        # requests of ``kind`` expected in [begin, end), integrating the hourly rate
        total = 0.0
        t = begin
        end = min(end, self._end_s)
        # Interactive demand keeps its weight: it needs room in the very minute it comes, and
        # counted less, the plan gave that room to deferred work (public scarcity day: one
        # request rejected that greedy served). Work that may wait is what vouchers are kept for.
        decay_s = math.inf if kind[0] == "interactive" else self._lead_decay_s
        while t < end:
            step = min(end, (t // _HOUR_S + 1) * _HOUR_S) - t
            lead = t + step / 2 - now_s
            # Trust fades with lead time: demand a day out may never come, while a voucher
            # kept for it is lost for good when it does not. Counting far demand less makes
            # the plan spend vouchers on the traffic in hand.
            weight = 1.0 / (1.0 + max(lead, 0.0) / decay_s)
            total += self.rate_per_s(kind, t + step / 2, now_s) * step * weight
            t += step
        return total

    @staticmethod
    def _periods(edges: tuple[float, ...], now_s: float, *, per_slot: bool) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for k in range(len(edges) - 1):
            begin, end = max(edges[k], now_s), edges[k + 1]
            if end <= begin:
                continue
            if not per_slot and out and out[-1][1] - out[-1][0] < _DEFER_BLOCK_S:
                out[-1] = (out[-1][0], end)
            else:
                out.append((begin, end))
        return out

    def _mix(self, kind: Kind) -> list[tuple[float, float, float, float]]:
        # [(share of requests, mean input, mean output, mean cached input)] per output-share band
        tally = self._tallies.get(kind)
        if tally is not None and tally.total > 0:
            return [
                (n / tally.total, tally.band_input[b] / n, tally.band_output[b] / n, tally.band_cached[b] / n)
                for b, n in enumerate(tally.band_requests)
                if n > 0
            ]
        prior = self._prior.get(kind)
        return [(1.0, prior[2], prior[3], 0.0)] if prior is not None else []

    def _window(self, kind: Kind) -> float:
        tally = self._tallies.get(kind)
        if tally is not None and tally.total > 0:
            return tally.window_s / tally.total
        prior = self._prior.get(kind)
        return prior[4] if prior is not None else 0.0

    def _shape_of(self, kind: Kind) -> tuple[float, ...]:
        prior = self._prior.get(kind)
        return prior[1] if prior is not None else self._shape

    def _hour(self, at_s: float) -> int:
        return self._index.minute_of_day(at_s) // 60

    def _hour_exposure(self, hour: int, now_s: float) -> float:
        # seconds of local hour ``hour`` between the start and now
        span = max(now_s - self._start_s, 0.0)
        full_days, rest = divmod(span, 86400.0)
        exposure = full_days * _HOUR_S
        start_minute = self._index.minute_of_day(self._start_s)
        # walk the partial day in hour-aligned pieces
        offset_s = (start_minute % 60) * 60.0
        t = 0.0
        current = start_minute // 60
        first = _HOUR_S - offset_s
        while t < rest:
            piece = min(first if t == 0.0 else _HOUR_S, rest - t)
            if current == hour:
                exposure += piece
            t += piece
            current = (current + 1) % 24
        return exposure


def _normalized(shape: tuple[float, ...]) -> tuple[float, ...]:
    # 24 weights scaled to mean 1
    mean = sum(shape) / len(shape) if shape else 0.0
    return tuple(w / mean for w in shape) if mean > 0 else (1.0,) * 24
