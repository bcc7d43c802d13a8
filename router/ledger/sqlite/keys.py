"""Virtual keys and key budgets on the SQLite ledger: their SQL, inside the caller's transaction.

The rules are ``ledger/keys.py``'s. A budgeted request's key hold is taken in the reserve's
``BEGIN IMMEDIATE`` transaction, which holds the file's write lock: the check and the hold
are one step, so no interleaving of threads or processes passes a budget.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from suanli.router.ledger import keys
from suanli.router.ledger.rules import YUAN_SCALE, budget_hold_q, to_q
from suanli.router.ledger.sqlite.reads import Read

__all__ = [
    "create_key",
    "hold_key_budget",
    "key_spend",
    "keys_where",
    "rebuild_key_held",
    "release_key_budget",
    "revoke_key",
    "settle_key_budget",
]

def hold_key_budget(c: sqlite3.Connection, hold_id: str, hold: keys.KeyBudgetHold) -> None:
    """Inside the reserve transaction: check both periods and hold; BudgetExceededError if not."""
    amount_q = budget_hold_q(hold.amount_yuan)
    for period, limit, label in hold.limits():
        if limit is None:
            continue
        row = c.execute(
            "SELECT spent_q + held_q FROM key_spend WHERE key_id = ? AND period = ?", (hold.key_id, period)
        ).fetchone()
        used_q = 0 if row is None else row[0]
        if used_q + amount_q > keys.yuan_q(limit):
            raise keys.over_budget(hold, limit, label, used_q)
    for period in (hold.day, hold.month):
        c.execute(
            "INSERT INTO key_spend (key_id, period, held_q) VALUES (?, ?, ?)"
            " ON CONFLICT (key_id, period) DO UPDATE SET held_q = held_q + excluded.held_q",
            (hold.key_id, period, amount_q),
        )
    c.execute(
        "INSERT INTO key_holds (hold_id, key_id, day, month, held_q) VALUES (?, ?, ?, ?, ?)",
        (hold_id, hold.key_id, hold.day, hold.month, amount_q),
    )


def _take_hold(c: sqlite3.Connection, hold_id: str) -> tuple[str, str, str, int] | None:
    sql = "DELETE FROM key_holds WHERE hold_id = ? RETURNING key_id, day, month, held_q"
    rows = c.execute(sql, (hold_id,)).fetchall()  # fetchall: the statement ends before the commit
    return rows[0] if rows else None


def settle_key_budget(c: sqlite3.Connection, hold_id: str, cost_yuan: float) -> None:
    """Inside the settle transaction: post the real cost on both periods, release the hold.

    The real cost is posted even above the hold (the upstream counted more than the
    estimate): spend is a fact, the budget only gates what is asked next.
    """
    row = _take_hold(c, hold_id)
    if row is None:
        return
    key_id, day, month, held_q = row
    cost_q = to_q(cost_yuan, YUAN_SCALE)
    c.executemany(
        "UPDATE key_spend SET held_q = held_q - ?, spent_q = spent_q + ? WHERE key_id = ? AND period = ?",
        [(held_q, cost_q, key_id, day), (held_q, cost_q, key_id, month)],
    )


def release_key_budget(c: sqlite3.Connection, hold_id: str) -> None:
    """Inside a void transaction: release what the hold kept of its key's budget."""
    row = _take_hold(c, hold_id)
    if row is None:
        return
    key_id, day, month, held_q = row
    c.executemany(
        "UPDATE key_spend SET held_q = held_q - ? WHERE key_id = ? AND period = ?",
        [(held_q, key_id, day), (held_q, key_id, month)],
    )


def rebuild_key_held(c: sqlite3.Connection) -> None:
    """At recovery: drop key holds whose ledger hold is no longer pending, re-sum ``held``."""
    c.execute("DELETE FROM key_holds WHERE hold_id NOT IN (SELECT id FROM holds WHERE state = 'pending')")
    c.execute(
        "UPDATE key_spend SET held_q = (SELECT COALESCE(SUM(held_q), 0) FROM key_holds h"
        " WHERE h.key_id = key_spend.key_id AND (h.day = key_spend.period OR h.month = key_spend.period))"
    )


def create_key(c: sqlite3.Connection, row: keys.KeyRow, secret_sha256: str) -> None:
    """Store a new key; its secret only as ``secret_sha256``."""
    c.execute(
        f"INSERT INTO keys ({keys.KEY_COLUMNS}, secret_sha256) VALUES ({', '.join('?' * 14)})",
        keys.key_values(row, secret_sha256),
    )


def revoke_key(c: sqlite3.Connection, key_id: str, at: float) -> bool:
    """Mark a key revoked at ``at`` (epoch s), keeping an earlier time; whether the key exists."""
    changed = c.execute("UPDATE keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (at, key_id))
    return changed.rowcount > 0


def keys_where(read: Read, where: str = "", params: Sequence[object] = ()) -> list[keys.KeyRow]:
    """Keys matching ``where`` (SQL after WHERE; every key when empty), oldest first."""
    sql = f"SELECT {keys.KEY_COLUMNS} FROM keys {f'WHERE {where} ' if where else ''}ORDER BY created, id"
    return [keys.key_row(r) for r in read(sql, params)]


def key_spend(read: Read, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Period -> (spent yuan, held yuan) of one key."""
    marks = ", ".join("?" * len(periods))
    sql = f"SELECT period, spent_q, held_q FROM key_spend WHERE key_id = ? AND period IN ({marks})"
    return keys.spend_of(read(sql, (key_id, *periods)))
