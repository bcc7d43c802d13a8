"""Per-clock-minute capacity book: model tokens and requests started at each region.

A minute is ``floor(epoch_s / 60)``, as in DESIGN.md's capacity rule. The book holds
what is already committed (started or booked for later), so nothing placed through it
can exceed a region's ``limits.tpm`` or ``limits.rpm``.
"""

from __future__ import annotations

import math

from config import Config

__all__ = ["CapacityBook", "minute_of"]

_INF = float("inf")


def minute_of(epoch_s: float) -> int:
    """The clock minute of a start: ``floor(epoch seconds / 60)``."""
    return math.floor(epoch_s / 60.0)


class CapacityBook:
    """What each region has committed per clock minute; mutable, owned by one caller."""

    def __init__(self, config: Config) -> None:
        self._tpm = {r.id: float(r.limits.tpm) if r.limits.tpm else _INF for r in config.regions}
        self._rpm = {r.id: float(r.limits.rpm) if r.limits.rpm else _INF for r in config.regions}
        self._used: dict[tuple[str, int], list[float]] = {}  # (region, minute) -> [tokens, requests]

    def used(self, region: str, minute: int) -> tuple[float, float]:
        """``(model tokens, requests)`` committed at ``region`` in ``minute``."""
        found = self._used.get((region, minute))
        return (found[0], found[1]) if found else (0.0, 0.0)

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
        found = self._used.get((region, minute))
        used_tokens, used_requests = (found[0], found[1]) if found else (0.0, 0.0)
        return (
            used_tokens + tokens + reserve_tokens <= self._tpm[region]
            and used_requests + 1 + reserve_requests <= self._rpm[region]
        )

    def add(self, region: str, minute: int, tokens: float) -> None:
        """Commit one request of ``tokens`` at ``region`` in ``minute``."""
        found = self._used.get((region, minute))
        if found is None:
            self._used[(region, minute)] = [float(tokens), 1.0]
        else:
            found[0] += tokens
            found[1] += 1.0

    def committed_from(self, minute: int) -> dict[tuple[str, int], tuple[float, float]]:
        """Everything committed from ``minute`` on: (region, minute) -> (tokens, requests)."""
        return {key: (v[0], v[1]) for key, v in self._used.items() if key[1] >= minute}

    def forget_before(self, minute: int) -> None:
        """Drop minutes before ``minute``: nothing can start in the past."""
        for key in [key for key in self._used if key[1] < minute]:
            del self._used[key]

    def fill(self, minute: int) -> dict[str, float]:
        """Region id -> share of its limits (the fuller of tpm and rpm) used in ``minute``."""
        out: dict[str, float] = {}
        for region, tpm in self._tpm.items():
            found = self._used.get((region, minute))
            if found is not None:
                out[region] = max(found[0] / tpm, found[1] / self._rpm[region])
        return out

    def limits(self, region: str) -> tuple[float, float]:
        """``(tpm, rpm)`` of ``region`` (inf when unlimited)."""
        return self._tpm[region], self._rpm[region]
