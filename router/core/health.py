"""Outlier ejection in the manner of Envoy, 429 cool-downs and half-open trials, per region.

- ``consecutive_5xx`` answers >= 500, or ``consecutive_gateway_failures`` connect errors,
  timeouts or broken streams in a row eject a region for ``base_ejection_s x n`` (n: its
  ejections in a row, capped at ``max_ejection_s``); never more than ``max_ejected_share``
  of the regions at once (but always at least one may be).
- When the ejection ends the region is half-open: one trial request may go; its success
  brings the region back, its failure ejects it again for longer.
- A 429 cools the region down for its ``Retry-After`` (or ``default_cooldown_s``).
- A stream that breaks after its first byte says the region's *streams* are failing (a proxy
  cutting long responses, say), not that it cannot answer: ``consecutive_gateway_failures``
  such breaks in a row keep *streamed* requests away for ``base_ejection_s``
  (``stream_blocked``), while whole answers still go there. A stream that ends cleanly resets it.

Time is the caller's: every method takes ``now_s`` (epoch seconds of the router's clock),
so tests drive ejection and recovery with an injected clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from suanli.config import HealthSettings

__all__ = ["Health", "RegionHealth"]

_TRIAL_STALE_S = 120.0  # a trial that never reported back (cancelled caller) stops blocking


@dataclass(slots=True)
class RegionHealth:
    """What the router knows of one region's health right now."""

    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejections: int = 0  # ever, for the status API
    streak: int = 0  # ejections without a healthy spell in between: the time multiplier
    ejected_until: float | None = None  # epoch s; stays set while half-open
    trial_since: float | None = None  # epoch s the half-open trial was sent
    cooling_until: float = 0.0  # epoch s, after a 429
    stream_breaks: int = 0  # streams broken after their first byte, in a row
    streams_ejected_until: float = 0.0  # epoch s: no streamed request before then

    def ejected(self, now_s: float) -> bool:
        return self.ejected_until is not None and now_s < self.ejected_until

    def half_open(self, now_s: float) -> bool:
        return self.ejected_until is not None and now_s >= self.ejected_until


class Health:
    """Health of every region; ``blocked(now_s)`` is what the chooser must avoid."""

    def __init__(self, region_ids: Iterable[str], settings: HealthSettings) -> None:
        self.settings = settings.ejection
        self.regions: dict[str, RegionHealth] = {rid: RegionHealth() for rid in region_ids}
        self._blocked: frozenset[str] = frozenset()
        self._valid_until = float("-inf")  # the cached blocked set holds until this epoch s

    def add(self, region_ids: Iterable[str]) -> None:
        """Track regions a config reload added (healthy until they fail); known ones keep their state."""
        for rid in region_ids:
            self.regions.setdefault(rid, RegionHealth())
        self._changed()

    def blocked(self, now_s: float) -> frozenset[str]:
        """Regions ejected, cooling down, or half-open with their trial out."""
        if now_s < self._valid_until:
            return self._blocked
        blocked: set[str] = set()
        next_change = float("inf")
        for rid, h in self.regions.items():
            if h.ejected_until is not None:
                if now_s < h.ejected_until:
                    blocked.add(rid)
                    next_change = min(next_change, h.ejected_until)
                elif h.trial_since is not None and now_s - h.trial_since < _TRIAL_STALE_S:
                    blocked.add(rid)
                    next_change = min(next_change, h.trial_since + _TRIAL_STALE_S)
            if now_s < h.cooling_until:
                blocked.add(rid)
                next_change = min(next_change, h.cooling_until)
        self._blocked = frozenset(blocked)
        self._valid_until = next_change
        return self._blocked

    def _changed(self) -> None:
        self._valid_until = float("-inf")

    def wait_s(self, region: str, now_s: float) -> float:
        """Seconds until ``region`` may be tried again (0 when it may now)."""
        h = self.regions[region]
        until = max(h.cooling_until, h.ejected_until or 0.0)
        return max(until - now_s, 0.0)

    def sending(self, region: str, now_s: float) -> None:
        """A request is about to go to ``region``: if half-open, it is the trial."""
        h = self.regions.get(region)
        if h is not None and h.half_open(now_s):
            h.trial_since = now_s
            self._changed()

    def success(self, region: str, now_s: float) -> None:
        """The region answered (a non-error status, or a stream's first byte)."""
        h = self.regions.get(region)
        if h is None:
            return
        h.consecutive_5xx = h.consecutive_gateway = 0
        if h.ejected_until is not None:
            if now_s < h.ejected_until:
                return  # an answer to a request sent before the ejection: the ejection stands
            # A healthy spell as long as the longest ejection forgives the earlier ones.
            if now_s - h.ejected_until > self.settings.max_ejection_s:
                h.streak = 0
            h.ejected_until = h.trial_since = None
            self._changed()

    def released(self, region: str) -> None:
        """A half-open trial ended without a verdict (the caller went away): allow another."""
        h = self.regions.get(region)
        if h is not None and h.trial_since is not None:
            h.trial_since = None
            self._changed()

    def failure(self, region: str, status: int, now_s: float, *, retry_after_s: float | None = None) -> None:
        """The region failed: ``status`` 0 for no answer (connect, timeout, broken stream)."""
        h = self.regions.get(region)
        if h is None:
            return
        s = self.settings
        if status == 429:
            h.cooling_until = max(h.cooling_until, now_s + (retry_after_s or s.default_cooldown_s))
            self._changed()
            return
        if status and status < 500 and status not in (401, 403):
            return  # the request's fault (or the balance's), not the region's health; 401/403 refuse our key
        if h.half_open(now_s):
            self._eject(h, now_s)
            return
        if status >= 500:
            h.consecutive_5xx += 1
        else:
            h.consecutive_gateway += 1
        if h.consecutive_5xx >= s.consecutive_5xx or h.consecutive_gateway >= s.consecutive_gateway_failures:
            if not h.ejected(now_s) and self._may_eject(now_s):
                self._eject(h, now_s)

    def stream_broke(self, region: str, now_s: float) -> None:
        """A stream from ``region`` broke after its first byte: only streams may avoid it for a while."""
        h = self.regions.get(region)
        if h is None:
            return
        h.stream_breaks += 1
        if h.stream_breaks >= self.settings.consecutive_gateway_failures:
            h.stream_breaks = 0
            h.streams_ejected_until = now_s + self.settings.base_ejection_s

    def stream_ended(self, region: str) -> None:
        """A stream from ``region`` ended cleanly."""
        h = self.regions.get(region)
        if h is not None:
            h.stream_breaks = 0

    def stream_blocked(self, now_s: float) -> frozenset[str]:
        """Regions whose streams broke too often lately: streamed requests go elsewhere if they can."""
        return frozenset(rid for rid, h in self.regions.items() if now_s < h.streams_ejected_until)

    def _may_eject(self, now_s: float) -> bool:
        ejected = sum(1 for h in self.regions.values() if h.ejected_until is not None)
        allowed = max(1, int(self.settings.max_ejected_share * len(self.regions)))
        return ejected < allowed

    def _eject(self, h: RegionHealth, now_s: float) -> None:
        s = self.settings
        h.streak += 1
        h.ejections += 1
        h.ejected_until = now_s + min(s.base_ejection_s * h.streak, s.max_ejection_s)
        h.trial_since = None
        h.consecutive_5xx = h.consecutive_gateway = 0
        self._changed()

    def state(self, region: str, now_s: float) -> dict[str, object]:
        """``state`` ("ok" | "ejected" | "cooling"), ``ejected_until`` (ISO or None), ``ejections``."""
        h = self.regions[region]
        if h.ejected_until is not None:
            state = "ejected"  # also while half-open: it is back only once its trial succeeded
        elif now_s < h.cooling_until:
            state = "cooling"
        else:
            state = "ok"
        until = None
        if h.ejected_until is not None:
            until = datetime.fromtimestamp(h.ejected_until, UTC).isoformat()
        return {"state": state, "ejected_until": until, "ejections": h.ejections}
