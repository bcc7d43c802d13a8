"""Cutbacks by key priority: when supply shrinks, sheddable work gives way first, critical work last.

A key carries ``priority``: ``critical``, ``normal`` (the default; the master key too) or
``sheddable``. Supply is *short* while a region is down (health ejected or cooled it) and for
``hold_s`` after supply last shrank: a region came back from an outage, a voucher was cut
(``POST /admin/vouchers/{id}/adjust`` with a negative amount), or a config reload removed a
region, a model or a voucher, or changed a region's limits. While supply is short:

- **sheddable**: refused at once, before anything is held, with 503 ``shed_low_priority`` and
  ``Retry-After`` (the seconds until the shortage ends, at least 1); its batch lines wait
  (they are put back and tried after Retry-After, while their completion window allows);
- **normal**: served, but not past ``1 - reserve_share`` of a region's rpm/tpm this minute
  when critical work came in the last ``hold_s``: the rest of each region is kept for it (a
  region over the share counts as at its limits, 429). Without critical traffic nothing is kept
  back: capacity is never idled for work that is not there;
- **critical**: served as always, up to the regions' whole limits.

When supply is not short, priorities change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from suanli.router.errors import ShedError

__all__ = ["PRIORITIES", "Shedding"]

PRIORITIES = ("critical", "normal", "sheddable")

HOLD_S = 600.0  # how long supply counts as short after it last shrank
RESERVE_SHARE = 0.2  # of each region's rpm/tpm kept for critical work while supply is short


class Shedding:
    """The shortage state of one Router and what each priority may do in it."""

    def __init__(self, clock: Callable[[], datetime], down: Callable[[], frozenset[str]], *,
                 hold_s: float = HOLD_S, reserve_share: float = RESERVE_SHARE) -> None:
        self._clock = clock
        self._down = down  # regions down now (the picker's health view)
        self.hold_s = hold_s
        self.reserve_share = reserve_share
        self._until_s = float("-inf")  # epoch s the last shrink stops counting
        self._why = ""
        self._was_down: frozenset[str] = frozenset()
        self._critical_s = float("-inf")  # epoch s critical work last asked

    def shrank(self, why: str) -> None:
        """Supply shrank now (a cut, a reload that removed capacity): short for ``hold_s``."""
        self._until_s = max(self._until_s, self._clock().timestamp() + self.hold_s)
        self._why = why

    def short(self) -> str | None:
        """Why supply is short now, or None."""
        now_s = self._clock().timestamp()
        down = self._down()
        if down:
            self._was_down = down
            self.shrank(f"region {', '.join(sorted(down))} down")
            return self._why
        if self._was_down:  # back up: short for hold_s more, while the plan catches up
            self._was_down = frozenset()
            self.shrank("a region just came back from an outage")
        return self._why if now_s < self._until_s else None

    def admit(self, priority: str) -> float | None:
        """ShedError for sheddable work while short; else the share of a region's limits the
        request may fill (None: all of it)."""
        now_s = self._clock().timestamp()
        if priority == "critical":
            self._critical_s = now_s
            return None
        why = self.short()
        if why is None:
            return None
        if priority == "sheddable":
            wait_s = max(self._until_s - now_s, 1.0)
            raise ShedError(f"supply is short ({why}): this key's work is sheddable and is refused first;"
                            f" retry in {wait_s:.0f} s", retry_after_s=wait_s)
        return 1.0 - self.reserve_share if now_s - self._critical_s < self.hold_s else None

    def info(self) -> dict[str, object]:
        """For the status API: whether supply is short, why, and until when (epoch s)."""
        why = self.short()
        return {"short": why is not None, "why": why, "until_s": self._until_s if why else None}
