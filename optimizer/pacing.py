"""Pacing each expiring voucher against its validity: a dual-descent correction of its price.

The planner's shadow price of a voucher is right for the demand it forecast. When the
traffic that would use the voucher does not come (a cold forecast, a day quieter than the
working-day shape, the demand scenarios' upper half), the price stays high, the chooser
keeps sending work elsewhere, and the voucher expires unspent: it hoards. As in online
allocation with budgets (Balseiro, Lu and Mirrokni's dual mirror descent), each voucher
that expires within the demand the planner knows of, in its last ``_LAST_S`` hours, has a
target rate, what would use up its free balance by its expiry; at every re-plan the
rate it was drawn at since the last one is compared with it, and a multiplier in
``[_FLOOR, 1]`` on its price moves by ``exp(-eta x gap)``, ``gap = 1 - drawn / target``:
a voucher drawn behind its pace gets cheaper, one drawn at or ahead of it climbs back to
the planner's own price. A voucher whose price is zero, not yet valid, or with nothing
left is untouched. Pure: the caller passes the time, balances and what it knows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from suanli.config import Voucher
from suanli.optimizer.snapshot import Plan

__all__ = ["Pacer"]

_ETA = 0.25  # per re-plan: an hour of nothing drawn at a 5-minute cadence takes a price to 5%
_FLOOR = 0.0  # a voucher far behind its pace may be priced at nothing (it would expire unused)
_MIN_STEP_S = 60.0  # draws over a shorter span say nothing about a rate
# Only a voucher's last hours are paced. Earlier, a draw behind a straight line to expiry
# is mostly the shape of the day (a quiet night before a busy morning), which the plan
# already knows; pacing it made the public `expiry` day 6% dearer (vouchers spent at zero
# price on whatever came first) and saved nothing there.
_LAST_S = 4 * 3600.0


class Pacer:
    """Per-voucher price multipliers, updated at each re-plan; mutable, owned by one planner."""

    def __init__(self, vouchers: Sequence[Voucher], *, eta: float = _ETA) -> None:
        self.vouchers = {v.id: v for v in vouchers}
        self.eta = eta
        self.multiplier: dict[str, float] = {}
        self._last: dict[str, tuple[float, float]] = {}  # voucher -> (time, free balance) at the last step

    def step(
        self, now_s: float, free: Mapping[str, float], use_by_s: float, prices: Mapping[str, float]
    ) -> None:
        """Compare each voucher's draw since the last step with its pace; move its multiplier.

        ``free`` is each voucher's balance not yet spoken for (units); ``use_by_s`` the end
        of the demand the planner sees (a voucher valid past it must be used by then);
        ``prices`` the fresh plan's voucher prices. A voucher the plan prices at zero is
        drawn as the plan says and keeps no correction: one it earned while plentiful
        would cancel the price it gets once it is scarce.
        """
        for vid, voucher in self.vouchers.items():
            if prices.get(vid, 0.0) <= 0.0:
                self.multiplier.pop(vid, None)
                self._last.pop(vid, None)
                continue
            balance = max(free.get(vid, 0.0), 0.0)
            valid_from = voucher.valid_from.timestamp() if voucher.valid_from else -math.inf
            expires = voucher.expires.timestamp() if voucher.expires else math.inf
            deadline = expires
            late = deadline - now_s <= _LAST_S
            if expires > use_by_s or not late or now_s < valid_from or now_s >= deadline or balance <= 0:
                self._last.pop(vid, None)
                continue
            last = self._last.get(vid)
            if last is None or now_s - last[0] < _MIN_STEP_S:
                if last is None:
                    self._last[vid] = (now_s, balance)
                continue
            span = now_s - last[0]
            target = last[1] / max(deadline - last[0], span)  # units per second to empty by the deadline
            drawn = (last[1] - balance) / span
            gap = 1.0 - drawn / target if target > 0 else 0.0
            value = self.multiplier.get(vid, 1.0) * math.exp(-self.eta * gap)
            self.multiplier[vid] = min(1.0, max(_FLOOR, value))
            self._last[vid] = (now_s, balance)

    def apply(self, plan: Plan) -> Plan:
        """``plan`` with each voucher's price times its multiplier."""
        if not self.multiplier:
            return plan
        prices = {v: p * self.multiplier.get(v, 1.0) for v, p in plan.voucher_price.items()}
        return dataclasses.replace(plan, voucher_price=prices)
