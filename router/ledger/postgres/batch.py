"""A batch of escrow settles as ``escrow_sql.FLUSH`` takes it: column arrays, hashed on this chain.

No I/O: ``postgres/escrow.py`` sends the arrays in one round trip and advances its chain's
tail only once they commit.
"""

from __future__ import annotations

import logging

from suanli.router.ledger import usage
from suanli.router.ledger.chain import row_hash
from suanli.router.ledger.postgres.escrow_sql import FLUSH_ARRAYS
from suanli.router.ledger.postgres.slices import QueuedSettle, Slice
from suanli.router.ledger.rules import clamped

__all__ = ["clamp", "flush_rows"]

log = logging.getLogger("router.ledger")


def flush_rows(batch: list[QueuedSettle], prev: str) -> tuple[list[list[object]], tuple[int, str]]:
    """The batch's arrays (``FLUSH`` order), each row chained on ``prev``; and the chain's new tail."""
    cols: list[list[object]] = [[] for _ in range(FLUSH_ARRAYS)]
    for item in batch:
        h = item.hold
        req = h.req
        voucher = h.voucher
        scale = voucher.scale if voucher is not None else 1
        values = usage.usage_values(
            item.usage_id or 0, h.id, now=item.now,
            request=(req.request_id, req.key_id, req.region, req.model, req.work_class, req.origin),
            voucher_id=req.voucher_id, s=item.s, voucher_units=item.units_q / scale)
        hash_ = row_hash(prev, values)
        item.values = (*values, prev, hash_)
        keys = [sl.lease_id for sl, _ in h.keys] + [None, None]
        row = (h.id, req.request_id, req.key_id, req.region, req.model, req.work_class, req.origin,
               req.voucher_id, scale, h.held_q, h.created.timestamp(), *item.values,
               item.units_q, voucher.lease_id if voucher is not None else None, keys[0], keys[1],
               item.cost_q if h.keys else 0, *usage.cache_values(item.s))
        for col, value in zip(cols, row, strict=True):
            col.append(value)
        prev = hash_
    return cols, (batch[-1].usage_id or 0, prev)


def clamp(batch: list[QueuedSettle], sl: Slice) -> None:
    """The voucher no longer covers what this replica settled on ``sl`` (its lease was returned
    while it was stopped, and the voucher is spent meanwhile): the excess is charged as cash,
    newest settles first, as a settle beyond its hold is."""
    short = -sl.free_q
    for item in reversed(batch):
        if short <= 0:
            break
        if item.hold.voucher is sl and item.units_q > 0:
            cut = min(short, item.units_q)
            item.units_q -= cut
            item.s = clamped(item.s, item.units_q / sl.scale)
            sl.used_q -= cut
            sl.queued_q -= cut
            short -= cut
            log.error("ledger: hold %s: %g units of %s no longer covered (lease lost), charged as cash",
                      item.hold.id, cut / sl.scale, sl.voucher_id)
