"""Resolving holds nobody will settle, on the SQLite ledger: stale ones, and those of dead owners.

Plain functions run inside the Ledger's write transaction (``BEGIN IMMEDIATE``); a voided
hold releases what it held of its voucher and of its key's budget.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from suanli.router.ledger.sqlite import keys as key_sql
from suanli.router.ledger.sqlite.owners import owner_alive, this_process

__all__ = ["recover", "void_many", "void_stale"]


def void_many(c: sqlite3.Connection, hold_ids: Sequence[str], now: float) -> None:
    """Void pending holds and release what they held."""
    for hold_id in hold_ids:
        row = c.execute(
            "SELECT voucher_id, held_q FROM holds WHERE id = ? AND state = 'pending'", (hold_id,)
        ).fetchone()
        if row is None:
            continue
        if row[0] is not None:
            c.execute("UPDATE vouchers SET held_q = held_q - ? WHERE id = ?", (row[1], row[0]))
        key_sql.release_key_budget(c, hold_id)
        c.execute("UPDATE holds SET state = 'voided', resolved = ? WHERE id = ?", (now, hold_id))


def void_stale(c: sqlite3.Connection, *, now: float, created_before: float) -> int:
    """Void the pending holds (of any owner) created before ``created_before``; how many."""
    sql = "SELECT id FROM holds WHERE state = 'pending' AND created < ?"
    ids = [r[0] for r in c.execute(sql, (created_before,))]
    void_many(c, ids, now)
    return len(ids)


def recover(c: sqlite3.Connection, *, now: float) -> int:
    """Void the pending holds of dead owners, forget those owners, re-sum every ``held``; how many voided."""
    host, pid, _ = this_process()
    owners = c.execute("SELECT id, host, pid, pid_start, closed FROM owners").fetchall()
    alive = {o[0] for o in owners if owner_alive(o, host=host, pid=pid)}
    pending = c.execute("SELECT id, owner FROM holds WHERE state = 'pending'").fetchall()
    ids = [hold_id for hold_id, owner in pending if owner not in alive]
    void_many(c, ids, now)
    c.executemany("DELETE FROM owners WHERE id = ?", [(o[0],) for o in owners if o[0] not in alive])
    # held is a cache of the pending holds' sum: rebuild it, so no drift can outlive a restart.
    c.execute(
        "UPDATE vouchers SET held_q = (SELECT COALESCE(SUM(held_q), 0) FROM holds"
        " WHERE state = 'pending' AND voucher_id = vouchers.id)"
    )
    key_sql.rebuild_key_held(c)
    return len(ids)
