"""Demand forecast learned online: request rate and size per (class, origin, model, local hour).

Each kind of request keeps counts per hour of the local day and the seconds of that hour
observed so far. The rate of an hour is its own count over its exposure, shrunk towards
the kind's overall rate while the hour is thinly observed (a pseudo-exposure of
``blend_s``). A config prior (``Config.demand``) enters as pseudo-observations worth
``prior_s`` seconds, so a cold start plans with it and the traffic seen takes over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config import Config, WorkClass, Zone
from optimizer.index import index_for
from optimizer.snapshot import Demand

__all__ = ["Forecast"]

_HOUR_S = 3600.0
Kind = tuple[WorkClass, Zone, str]  # (class, origin, model)


@dataclass(slots=True)
class _Tally:
    requests: list[float] = field(default_factory=lambda: [0.0] * 24)  # per local hour
    total: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    window_s: float = 0.0  # summed start windows (deadline) of the requests seen


class Forecast:
    """Online forecast of the demand ahead; mutable, fed by ``observe``, read by ``demand``.

    Not thread-safe by itself: the re-planner calls it from one thread at a time.
    """

    def __init__(
        self, config: Config, *, start_s: float, blend_s: float = 3600.0, prior_s: float = 3600.0
    ) -> None:
        self._config = config
        self._index = index_for(config)
        self._start_s = start_s
        self._blend_s = blend_s
        self._prior_s = prior_s
        self._tallies: dict[Kind, _Tally] = {}
        self._prior: dict[Kind, tuple[float, tuple[float, ...], float, float, float]] = {}
        for p in config.demand:
            shape = p.hourly or (1.0,) * 24
            mean = sum(shape) / 24 or 1.0
            deadline = p.deadline_s or (
                0.0 if p.work_class == "interactive" else config.classes.deadline_s(p.work_class)
            )
            self._prior[(p.work_class, p.origin, p.model)] = (
                p.requests_per_hour / _HOUR_S,
                tuple(w / mean for w in shape),
                p.input_tokens,
                p.output_tokens,
                deadline,
            )

    def observe(
        self, kind: Kind, *, input_tokens: float, output_tokens: float, window_s: float, at_s: float
    ) -> None:
        """Count one request of ``kind`` arriving at ``at_s`` with start window ``window_s``."""
        tally = self._tallies.get(kind)
        if tally is None:
            tally = self._tallies[kind] = _Tally()
        tally.requests[self._hour(at_s)] += 1
        tally.total += 1
        tally.input_tokens += input_tokens
        tally.output_tokens += output_tokens
        tally.window_s += window_s

    def rate_per_s(self, kind: Kind, at_s: float, now_s: float) -> float:
        """Expected arrivals per second of ``kind`` at ``at_s``, as known at ``now_s``."""
        observed_s = max(now_s - self._start_s, 0.0)
        tally = self._tallies.get(kind)
        prior = self._prior.get(kind)
        count = tally.total if tally else 0.0
        exposure = observed_s
        if prior is not None:
            count += prior[0] * self._prior_s
            exposure += self._prior_s
        if exposure <= 0 or count <= 0:
            return 0.0
        # Short exposures overstate a burst: never divide by less than ten minutes.
        overall = count / max(exposure, 600.0)
        hour = self._hour(at_s)
        hour_exposure = self._hour_exposure(hour, now_s)
        hour_count = tally.requests[hour] if tally else 0.0
        shape = prior[1][hour] if prior is not None else 1.0
        return (hour_count + self._blend_s * overall * shape) / (hour_exposure + self._blend_s)

    def demand(self, edges: tuple[float, ...], now_s: float) -> tuple[Demand, ...]:
        """Expected demand per kind and slot of ``edges`` from ``now_s`` on."""
        out: list[Demand] = []
        for kind in sorted(set(self._tallies) | set(self._prior)):
            size = self._size(kind)
            if size is None:
                continue
            input_tokens, output_tokens, window_s = size
            for k in range(len(edges) - 1):
                begin, end = max(edges[k], now_s), edges[k + 1]
                if end <= begin:
                    continue
                requests = self.rate_per_s(kind, (begin + end) / 2, now_s) * (end - begin)
                if requests <= 1e-9:
                    continue
                interactive = kind[0] == "interactive"
                out.append(
                    Demand(
                        work_class=kind[0],
                        origin=kind[1],
                        model=kind[2],
                        earliest=begin,
                        latest=end - 1e-3 if interactive else end + window_s,
                        requests=requests,
                        input_tokens=requests * input_tokens,
                        output_tokens=requests * output_tokens,
                    )
                )
        return tuple(out)

    def _size(self, kind: Kind) -> tuple[float, float, float] | None:
        # (mean input, mean output, mean start window) of one request of ``kind``
        tally = self._tallies.get(kind)
        if tally is not None and tally.total > 0:
            n = tally.total
            return tally.input_tokens / n, tally.output_tokens / n, tally.window_s / n
        prior = self._prior.get(kind)
        if prior is None:
            return None
        return prior[2], prior[3], prior[4]

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
