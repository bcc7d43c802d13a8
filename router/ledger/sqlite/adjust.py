"""A voucher adjustment on the SQLite ledger, inside the caller's ``BEGIN IMMEDIATE`` transaction.

The rules are ``ledger/adjust.py``'s. The write lock the transaction holds makes the check
(what is free) and the change one step against every concurrent hold, in any process.
"""

from __future__ import annotations

import sqlite3

from suanli.router.errors import LedgerError
from suanli.router.ledger import adjust
from suanli.router.ledger.chain import row_hash
from suanli.router.ledger.rules import to_q
from suanli.router.ledger.usage import USAGE_COLUMNS, usage_values

__all__ = ["adjust_voucher"]

_VOUCHER = "SELECT id, kind, scale, balance_q, held_q, region FROM vouchers WHERE id = ?"


def adjust_voucher(
    c: sqlite3.Connection,
    *,
    owner: str,
    head: tuple[int, str],
    voucher_id: str,
    amount: float,
    reason: str,
    now: float,
) -> tuple[adjust.Adjustment, tuple[int, str]]:
    """Top up (``amount`` > 0) or cut (< 0) a voucher; the adjustment and the chain's new head.

    ``head`` is the chain's last ``(id, hash)``. LedgerError names an unknown voucher.
    """
    row = c.execute(_VOUCHER, (voucher_id,)).fetchone()
    if row is None:
        raise LedgerError(f"unknown voucher {voucher_id!r}")
    vid, kind, scale, balance_q, held_q, region = row
    delta_q = to_q(abs(amount), scale) * (1 if amount >= 0 else -1)
    moved_q = adjust.applied_q(balance_q, held_q, delta_q)
    c.execute("UPDATE vouchers SET balance_q = balance_q + ?, amount_q = amount_q + ? WHERE id = ?",
              (moved_q, moved_q, vid))
    adj_id = adjust.adjustment_id()
    key_id, region, model, work_class, origin = adjust.adjustment_request(region)
    c.execute(
        "INSERT INTO holds (id, owner, request_id, key_id, region, model, work_class, origin, voucher_id,"
        " held_q, held_units, created, state, resolved)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 'settled', ?)",
        (adj_id, owner, adj_id, key_id, region, model, work_class, origin, vid, now, now),
    )
    last_id, prev_hash = head
    taken = -moved_q / scale  # the row's units are what the voucher paid: a top-up is negative
    values = usage_values(last_id + 1, adj_id, now=now, request=(adj_id, key_id, region, model, work_class,
                          origin), voucher_id=vid, s=adjust.adjustment_settlement(taken), voucher_units=taken)
    hash_ = row_hash(prev_hash, values)
    c.execute(f"INSERT INTO usage ({USAGE_COLUMNS}, voucher_q) VALUES ({', '.join('?' * 24)})",
              (*values, prev_hash, hash_, -moved_q))
    c.execute("INSERT INTO voucher_adjustments (hold_id, voucher_id, requested, applied, reason, time)"
              " VALUES (?, ?, ?, ?, ?, ?)", (adj_id, vid, amount, moved_q / scale, reason, now))
    after = c.execute("SELECT id, kind, scale, balance_q, held_q FROM vouchers WHERE id = ?",
                      (vid,)).fetchone()
    done = adjust.as_adjustment(after, requested=amount, moved_q=moved_q, reason=reason,
                                usage_id=last_id + 1, time=now)
    return done, (last_id + 1, hash_)
