"""Per-clock-minute capacity book: model tokens and requests started at each region.

A minute is ``floor(epoch_s / 60)``, as in DESIGN.md's capacity rule. The book holds
what is already committed (started or booked for later), so nothing placed through it
can exceed a region's ``limits.tpm`` or ``limits.rpm``. Each region keeps two arrays
indexed by minute from a moving base, so the scheduler's search for the first minute
with room is one vector operation rather than a loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from config import Config

if TYPE_CHECKING:  # numpy loads with the first booking: a proxy without batch work never needs it
    import numpy as np

__all__ = ["CapacityBook", "minute_of"]

_INF = float("inf")
_GROW = 1440  # minutes added at a time when a booking lies past the arrays' end


def minute_of(epoch_s: float) -> int:
    """The clock minute of a start: ``floor(epoch seconds / 60)``."""
    return math.floor(epoch_s / 60.0)


class CapacityBook:
    """What each region has committed per clock minute; mutable, owned by one caller."""

    def __init__(self, config: Config) -> None:
        self._tpm = {r.id: float(r.limits.tpm) if r.limits.tpm else _INF for r in config.regions}
        self._rpm = {r.id: float(r.limits.rpm) if r.limits.rpm else _INF for r in config.regions}
        self._base: int | None = None  # clock minute of index 0
        self._size = 0
        # region id -> per minute from the base: model tokens, requests
        self._tokens: dict[str, np.ndarray] = {}
        self._requests: dict[str, np.ndarray] = {}

    def used(self, region: str, minute: int) -> tuple[float, float]:
        """``(model tokens, requests)`` committed at ``region`` in ``minute``."""
        at = self._at(minute)
        if at is None:
            return 0.0, 0.0
        return float(self._tokens[region][at]), float(self._requests[region][at])

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
        lo, hi = first - base, min(last - base, self._size - 1) + 1
        tokens_used, requests_used = self._tokens[region], self._requests[region]
        if tokens_used[lo] <= tokens_left and requests_used[lo] <= requests_left:
            return first  # the common case: the first minute has room
        room = (tokens_used[lo:hi] <= tokens_left) & (requests_used[lo:hi] <= requests_left)
        found = int(room.argmax())
        if room[found]:
            return first + found
        return base + hi if base + hi <= last else None  # past the arrays' end nothing is booked

    def add(self, region: str, minute: int, tokens: float) -> None:
        """Commit one request of ``tokens`` at ``region`` in ``minute``."""
        at = self._index_for(minute)
        self._tokens[region][at] += tokens
        self._requests[region][at] += 1.0

    def committed_from(self, minute: int) -> dict[tuple[str, int], tuple[float, float]]:
        """Everything committed from ``minute`` on: (region, minute) -> (tokens, requests)."""
        out: dict[tuple[str, int], tuple[float, float]] = {}
        if self._base is None:
            return out
        lo = max(minute - self._base, 0)
        for region, requests in self._requests.items():
            tokens = self._tokens[region]
            for at in requests[lo:].nonzero()[0] + lo:
                out[(region, self._base + int(at))] = (float(tokens[at]), float(requests[at]))
        return out

    def forget_before(self, minute: int) -> None:
        """Drop minutes before ``minute``: nothing can start in the past."""
        if self._base is None or minute <= self._base:
            return
        import numpy as np

        drop = min(minute - self._base, self._size)
        for arrays in (self._tokens, self._requests):
            for region, values in arrays.items():
                arrays[region] = np.concatenate((values[drop:], np.zeros(drop)))
        self._base += drop

    def fill(self, minute: int) -> dict[str, float]:
        """Region id -> share of its limits (the fuller of tpm and rpm) used in ``minute``."""
        at = self._at(minute)
        if at is None:
            return {}
        out: dict[str, float] = {}
        for region, tpm in self._tpm.items():
            requests = float(self._requests[region][at])
            if requests:
                out[region] = max(float(self._tokens[region][at]) / tpm, requests / self._rpm[region])
        return out

    def limits(self, region: str) -> tuple[float, float]:
        """``(tpm, rpm)`` of ``region`` (inf when unlimited)."""
        return self._tpm[region], self._rpm[region]

    def _at(self, minute: int) -> int | None:
        # index of ``minute`` in the arrays, None when nothing can be booked there
        base = self._base
        if base is None or not base <= minute < base + self._size:
            return None
        return minute - base

    def _index_for(self, minute: int) -> int:
        # index of ``minute``, growing the arrays (or moving the base back) to hold it
        import numpy as np

        if self._base is None:
            self._base = minute
            self._size = _GROW
            self._tokens = {r: np.zeros(_GROW) for r in self._tpm}
            self._requests = {r: np.zeros(_GROW) for r in self._tpm}
        if minute < self._base:
            extra = self._base - minute
            for arrays in (self._tokens, self._requests):
                for region, values in arrays.items():
                    arrays[region] = np.concatenate((np.zeros(extra), values))
            self._base, self._size = minute, self._size + extra
        elif minute >= self._base + self._size:
            extra = max(minute - self._base - self._size + 1, _GROW)
            for arrays in (self._tokens, self._requests):
                for region, values in arrays.items():
                    arrays[region] = np.concatenate((values, np.zeros(extra)))
            self._size += extra
        return minute - self._base
