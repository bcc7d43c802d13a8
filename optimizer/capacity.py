"""Per-clock-minute capacity book: model tokens and requests started at each region.

A minute is ``floor(epoch_s / 60)``, as in DESIGN.md's capacity rule. The book holds
what is already committed (started or booked for later), so nothing placed through it
can exceed a region's ``limits.tpm`` or ``limits.rpm``. Each region keeps two flat
``array('d')`` indexed by minute from a moving base: reading one minute on the request
path gives a Python float directly, with none of numpy's per-call dispatch, and the
scheduler's search for the first minute with room stops at the first one (usually the
first minute it looks at).
"""

from __future__ import annotations

import math
from array import array

from suanli.config import Config

__all__ = ["CapacityBook", "minute_of"]

_INF = float("inf")
_GROW = 1440  # minutes added at a time when a booking lies past the arrays' end


def minute_of(epoch_s: float) -> int:
    """The clock minute of a start: ``floor(epoch seconds / 60)``."""
    return math.floor(epoch_s / 60.0)


def _zeros(n: int) -> array:
    return array("d", bytes(8 * n))


class CapacityBook:
    """What each region has committed per clock minute; mutable, owned by one caller."""

    def __init__(self, config: Config) -> None:
        self._tpm = {r.id: float(r.limits.tpm) if r.limits.tpm else _INF for r in config.regions}
        self._rpm = {r.id: float(r.limits.rpm) if r.limits.rpm else _INF for r in config.regions}
        self._base: int | None = None  # clock minute of index 0
        self._size = 0
        # region id -> per minute from the base: model tokens, requests
        self._tokens: dict[str, array] = {}
        self._requests: dict[str, array] = {}

    def used(self, region: str, minute: int) -> tuple[float, float]:
        """``(model tokens, requests)`` committed at ``region`` in ``minute``."""
        base = self._base
        if base is None or not base <= minute < base + self._size:
            return 0.0, 0.0
        at = minute - base
        return self._tokens[region][at], self._requests[region][at]

    def fits(
        self,
        region: str,
        minute: int,
        tokens: float,
        *,
        reserve_tokens: float = 0.0,
        reserve_requests: float = 0.0,
    ) -> bool:
        """Whether one more request of ``tokens`` fits, keeping the reserves free."""
        used_tokens, used_requests = self.used(region, minute)
        return (
            used_tokens + tokens + reserve_tokens <= self._tpm[region]
            and used_requests + 1 + reserve_requests <= self._rpm[region]
        )

    def first_fit(
        self,
        region: str,
        first: int,
        last: int,
        tokens: float,
        *,
        reserve_tokens: float = 0.0,
        reserve_requests: float = 0.0,
    ) -> int | None:
        """The first minute in ``[first, last]`` where ``fits`` holds, or None."""
        tokens_left = self._tpm[region] - tokens - reserve_tokens
        requests_left = self._rpm[region] - 1 - reserve_requests
        if tokens_left < 0 or requests_left < 0 or last < first:
            return None
        base = self._base
        if base is None or last < base or first >= base + self._size:
            return first  # nothing booked there
        if first < base:
            return first
        hi = min(last - base, self._size - 1) + 1
        tokens_used, requests_used = self._tokens[region], self._requests[region]
        for at in range(first - base, hi):
            if tokens_used[at] <= tokens_left and requests_used[at] <= requests_left:
                return base + at
        return base + hi if base + hi <= last else None  # past the arrays' end nothing is booked

    def add(self, region: str, minute: int, tokens: float) -> None:
        """Commit one request of ``tokens`` at ``region`` in ``minute``."""
        at = self._index_for(minute)
        self._tokens[region][at] += tokens
        self._requests[region][at] += 1.0

    def release(self, region: str, minute: int, tokens: float) -> None:
        """Take back one request of ``tokens`` committed by ``add`` (a booking moved elsewhere)."""
        at = self._index_for(minute)
        self._tokens[region][at] = max(self._tokens[region][at] - tokens, 0.0)
        self._requests[region][at] = max(self._requests[region][at] - 1.0, 0.0)

    def committed_from(self, minute: int) -> dict[tuple[str, int], tuple[float, float]]:
        """Everything committed from ``minute`` on: (region, minute) -> (tokens, requests)."""
        out: dict[tuple[str, int], tuple[float, float]] = {}
        base = self._base
        if base is None:
            return out
        lo = max(minute - base, 0)
        for region, requests in self._requests.items():
            tokens = self._tokens[region]
            for at in range(lo, self._size):
                if requests[at]:
                    out[(region, base + at)] = (tokens[at], requests[at])
        return out

    def forget_before(self, minute: int) -> None:
        """Drop minutes before ``minute``: nothing can start in the past."""
        if self._base is None or minute <= self._base:
            return
        drop = min(minute - self._base, self._size)
        for arrays in (self._tokens, self._requests):
            for values in arrays.values():
                del values[:drop]
                values.extend(_zeros(drop))
        self._base += drop

    def fill(self, minute: int) -> dict[str, float]:
        """Region id -> share of its limits (the fuller of tpm and rpm) used in ``minute``."""
        base = self._base
        if base is None or not base <= minute < base + self._size:
            return {}
        at = minute - base
        out: dict[str, float] = {}
        for region, tpm in self._tpm.items():
            requests = self._requests[region][at]
            if requests:
                out[region] = max(self._tokens[region][at] / tpm, requests / self._rpm[region])
        return out

    def limits(self, region: str) -> tuple[float, float]:
        """``(tpm, rpm)`` of ``region`` (inf when unlimited)."""
        return self._tpm[region], self._rpm[region]

    def _index_for(self, minute: int) -> int:
        # index of ``minute``, growing the arrays (or moving the base back) to hold it
        if self._base is None:
            self._base = minute
            self._size = _GROW
            self._tokens = {r: _zeros(_GROW) for r in self._tpm}
            self._requests = {r: _zeros(_GROW) for r in self._tpm}
        if minute < self._base:
            extra = self._base - minute
            for arrays in (self._tokens, self._requests):
                for region, values in arrays.items():
                    arrays[region] = _zeros(extra) + values
            self._base, self._size = minute, self._size + extra
        elif minute >= self._base + self._size:
            extra = max(minute - self._base - self._size + 1, _GROW)
            for arrays in (self._tokens, self._requests):
                for values in arrays.values():
                    values.extend(_zeros(extra))
            self._size += extra
        return minute - self._base
