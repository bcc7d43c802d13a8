"""The escrow's in-memory books: one slice per leased account, holds on them, settles queued.

No I/O here: ``postgres/escrow.py`` leases, flushes and returns; these records say how much
of a slice is free, how big the next lease should be, and what a settle puts in a batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from suanli.router.ledger.types import HoldRequest, Settlement, UsageRow

__all__ = ["LEASE_HORIZON_S", "EscrowCounters", "QueuedSettle", "Slice", "SliceHold", "lease_size"]

# A lease covers this many seconds of the measured draw: renewals stay rare (about one per
# horizon per busy account and replica) while an idle replica strands little.
LEASE_HORIZON_S = 5.0
# At most this fraction of what an account has free goes to one lease beyond the need, so
# a nearly spent voucher is shared out in small slices instead of parked on one replica.
SHARE = 4
# A fresh slice asks for this many needs at once: the draw rate is unknown yet.
FIRST_LEASE_NEEDS = 16


class EscrowCounters:
    """What a replica did. ``round_trips``: every statement its pooled sessions sent (their
    query logger), background work included; ``path_trips``: those the request path sent
    (flushes, leases, id blocks), the ones a request waits on."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.path_trips = 0
        self.reserves = 0
        self.settles = 0
        self.leases = 0
        self.flushes = 0

    def count(self, _query: object = None) -> None:
        self.round_trips += 1


def lease_size(free_q: int, need_q: int, want_q: int) -> int:
    """What a lease takes of an account with ``free_q`` free: the need, up to the want, capped."""
    return max(min(free_q, max(need_q, min(want_q, free_q // SHARE))), 0)


@dataclass(slots=True)
class Slice:
    """This replica's share of one account: a voucher, or one period of one key's budget.

    ``limit_q`` None on a key period is an unlimited period: it is leased with nothing,
    only to tally the spend this replica posts to it.
    """

    voucher_id: str | None = None
    key_id: str | None = None
    period: str | None = None
    limit_q: int | None = None
    scale: int = 1
    lease_id: str | None = None
    leased_q: int = 0  # granted by the lease row
    used_q: int = 0  # settled on it: committed or queued
    queued_q: int = 0  # of used_q, what is still in the flush queue
    held_q: int = 0  # held by pending requests
    epoch: int = 0  # the voucher's lease_epoch when leased: a bump recalls the slice
    last_use: float = 0.0  # loop time of the last hold
    drawn_q: int = 0  # held since the last tick, for the draw rate
    rate_q: float = 0.0  # units (x scale) per second, smoothed over ticks
    leasing: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def bounded(self) -> bool:
        return self.voucher_id is not None or self.limit_q is not None

    @property
    def free_q(self) -> int:
        return self.leased_q - self.used_q - self.held_q

    @property
    def idle(self) -> bool:
        return self.held_q == 0 and self.queued_q == 0

    def want_q(self, need_q: int) -> int:
        """How much to ask for when ``need_q`` more is needed now."""
        if self.rate_q <= 0:
            return need_q * FIRST_LEASE_NEEDS
        return max(need_q, int(self.rate_q * LEASE_HORIZON_S)) + need_q

    def tick(self, dt_s: float) -> None:
        """Fold the draw since the last tick into the rate."""
        if dt_s > 0:
            self.rate_q = 0.5 * self.rate_q + 0.5 * self.drawn_q / dt_s
        self.drawn_q = 0

    def lost(self) -> None:
        """A peer returned this lease (this replica was silent past the TTL): lease anew."""
        self.lease_id = None
        self.leased_q = 0
        self.used_q = self.queued_q  # what the returned lease posted is gone from it

    def returned(self) -> None:
        """This replica returned the lease (idle, recalled): nothing of it is left."""
        self.lease_id = None
        self.leased_q = self.used_q = 0


@dataclass(slots=True)
class SliceHold:
    """A pending hold in memory: what it took of which slices."""

    id: str
    req: HoldRequest
    created: datetime
    voucher: Slice | None
    held_q: int  # of the voucher, x its scale
    keys: list[tuple[Slice, int]]  # (key period slice, nano-yuan held on it: 0 when unlimited)
    settling: QueuedSettle | None = None


@dataclass(slots=True)
class QueuedSettle:
    """A settle waiting for its batch: the hold, what it posts, and the row once written."""

    hold: SliceHold
    s: Settlement
    units_q: int
    cost_q: int
    now: float
    future: asyncio.Future[UsageRow]
    usage_id: int | None = None
    values: tuple[Any, ...] = ()
