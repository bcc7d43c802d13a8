"""A virtual clock for batch and fine-tuning tests and benchmarks: hours of schedule in seconds.

The Router, ledger and workload executors all take ``clock`` as a callable returning an
aware UTC datetime. ``VirtualClock`` is one: it starts at ``start`` and runs ``speed``
times faster than the wall clock (``speed=0``: it only moves when ``advance`` or ``set``
is called). The executors read ``speed`` to turn a wait on this clock into a real sleep.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

__all__ = ["VirtualClock", "clock_speed"]


class VirtualClock:
    """A callable clock: ``clock()`` is now on the virtual time line."""

    def __init__(self, start: datetime, *, speed: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs an aware start time")
        self.speed = speed
        self._lock = threading.Lock()
        self._base = start.astimezone(UTC)
        self._mono = time.monotonic()

    def __call__(self) -> datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._mono) * self.speed
            return self._base + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds`` of virtual time."""
        self.set(self() + timedelta(seconds=seconds))

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (never backwards: timestamps already written must stay ordered)."""
        with self._lock:
            now = self._base + timedelta(seconds=(time.monotonic() - self._mono) * self.speed)
            self._base = max(moment.astimezone(UTC), now)
            self._mono = time.monotonic()


def clock_speed(clock: object) -> float:
    """Virtual seconds per real second of ``clock`` (1 for a wall clock, 0 for a manual one)."""
    speed = getattr(clock, "speed", 1.0)
    return float(speed) if isinstance(speed, int | float) else 1.0
