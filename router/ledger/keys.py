"""The ledger's side of virtual keys: key rows, and key budgets held like voucher balances.

A key's budget is a yuan amount per local day and per local month. Each request of a key
with a budget holds the upper bound of its cost (input estimate plus ``max_tokens``) on
the key's day and month rows, in the same ``BEGIN IMMEDIATE`` transaction as its voucher
hold, and under the same hold id: ``settle`` posts the real cost and releases the rest,
``void`` (and a restart's recovery) releases it all. So no interleaving of requests,
threads or processes can spend more than a budget.

Storage (SQLite; the PostgreSQL backend mirrors it): ``keys`` (one row per key, the secret
only as its SHA-256), ``key_spend`` (key id, period -> spent and held nano-yuan, where a
period is ``day:YYYY-MM-DD`` or ``month:YYYY-MM`` in the config's timezone) and
``key_holds`` (hold id -> key, periods, held nano-yuan; deleted once the hold resolves).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from suanli.router.errors import BudgetExceededError, LedgerError
from suanli.router.ledger.chain import HASHED_COLUMNS

__all__ = [
    "KEYS_MIGRATION",
    "YUAN_Q",
    "KeyBudgetHold",
    "KeyLedgerMixin",
    "KeyRow",
    "hold_key_budget",
    "rebuild_key_held",
    "release_key_budget",
    "settle_key_budget",
]

YUAN_Q = 10**9  # nano-yuan per yuan, as the ledger's yuan vouchers

KEYS_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        revoked REAL,
        expires REAL,
        budget_day_q INTEGER,
        budget_month_q INTEGER,
        allowed_regions TEXT,
        allowed_zones TEXT,
        default_class TEXT,
        origin TEXT,
        rpm INTEGER
    )""",
    """CREATE TABLE key_spend (
        key_id TEXT NOT NULL,
        period TEXT NOT NULL,
        spent_q INTEGER NOT NULL DEFAULT 0,
        held_q INTEGER NOT NULL DEFAULT 0 CHECK (held_q >= 0),
        PRIMARY KEY (key_id, period)
    )""",
    """CREATE TABLE key_holds (
        hold_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        day TEXT NOT NULL,
        month TEXT NOT NULL,
        held_q INTEGER NOT NULL
    )""",
)

_KEY_COLUMNS = (
    "id, name, created, revoked, expires, budget_day_q, budget_month_q, allowed_regions, allowed_zones,"
    " default_class, origin, rpm"
)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A virtual key as stored (never its secret). Times are epoch seconds; budgets in yuan."""

    id: str
    name: str
    created: float
    revoked: float | None
    expires: float | None
    budget_yuan_per_day: float | None
    budget_yuan_per_month: float | None
    allowed_regions: tuple[str, ...] | None
    allowed_zones: tuple[str, ...] | None
    default_class: str | None
    origin: str | None
    rpm: int | None


@dataclass(frozen=True, slots=True)
class KeyBudgetHold:
    """What a request of a budgeted key asks the ledger to hold, beside its voucher hold."""

    key_id: str
    day: str  # "day:2026-12-01", local to the config's timezone
    month: str  # "month:2026-12"
    amount_yuan: float  # the upper bound of the request's cost
    day_limit_yuan: float | None
    month_limit_yuan: float | None


def _q(yuan: float | None) -> int | None:
    return None if yuan is None else round(yuan * YUAN_Q)


def _listed(items: Sequence[str] | None) -> str | None:
    return None if items is None else json.dumps(list(items))


def _unlisted(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _key_row(r: Sequence[Any]) -> KeyRow:
    return KeyRow(
        id=r[0],
        name=r[1],
        created=r[2],
        revoked=r[3],
        expires=r[4],
        budget_yuan_per_day=None if r[5] is None else r[5] / YUAN_Q,
        budget_yuan_per_month=None if r[6] is None else r[6] / YUAN_Q,
        allowed_regions=_unlisted(r[7]),
        allowed_zones=_unlisted(r[8]),
        default_class=r[9],
        origin=r[10],
        rpm=r[11],
    )


def hold_key_budget(c: sqlite3.Connection, hold_id: str, hold: KeyBudgetHold) -> None:
    """Inside the reserve transaction: check both periods and hold; BudgetExceededError if not."""
    # Ceiling, so that n holds of one request's bound never fit in less than n requests' cost.
    amount_q = max(math.ceil(hold.amount_yuan * YUAN_Q - 1e-6), 0)
    for period, limit, label in (
        (hold.day, hold.day_limit_yuan, "today"),
        (hold.month, hold.month_limit_yuan, "this month"),
    ):
        if limit is None:
            continue
        row = c.execute(
            "SELECT spent_q + held_q FROM key_spend WHERE key_id = ? AND period = ?", (hold.key_id, period)
        ).fetchone()
        used_q = 0 if row is None else row[0]
        limit_q = round(limit * YUAN_Q)
        if used_q + amount_q > limit_q:
            raise BudgetExceededError(
                f"this key's budget of {limit:g} yuan {label} is spent: {used_q / YUAN_Q:.6f} yuan used or"
                f" held, and this request may cost up to {hold.amount_yuan:.6f} yuan"
                " (lower max_tokens to ask for less)"
            )
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
    cost_q = max(round(cost_yuan * YUAN_Q), 0)
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


class KeyLedgerMixin:
    """Key rows and the audit's raw chain, as Ledger methods (Ledger supplies the connection)."""

    def _immediate(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def create_key(self, row: KeyRow, secret_sha256: str) -> None:
        """Store a new key; its secret only as ``secret_sha256``."""
        with self._immediate() as c:
            c.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}, secret_sha256) VALUES ({', '.join('?' * 13)})",
                (
                    row.id,
                    row.name,
                    row.created,
                    row.revoked,
                    row.expires,
                    _q(row.budget_yuan_per_day),
                    _q(row.budget_yuan_per_month),
                    _listed(row.allowed_regions),
                    _listed(row.allowed_zones),
                    row.default_class,
                    row.origin,
                    row.rpm,
                    secret_sha256,
                ),
            )

    def key_by_secret(self, secret_sha256: str) -> KeyRow | None:
        """The key whose secret hashes to ``secret_sha256`` (revoked or not), or None."""
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM keys WHERE secret_sha256 = ?", (secret_sha256,))
        return _key_row(rows[0]) if rows else None

    def key(self, key_id: str) -> KeyRow | None:
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,))
        return _key_row(rows[0]) if rows else None

    def keys(self) -> list[KeyRow]:
        """Every key, revoked ones included, oldest first."""
        return [_key_row(r) for r in self._read(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created, id")]

    def revoke_key(self, key_id: str, at: float) -> KeyRow:
        """Mark a key revoked at ``at`` (epoch s); revoking twice keeps the first time."""
        with self._immediate() as c:
            changed = c.execute("UPDATE keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (at, key_id))
            if changed.rowcount == 0:
                raise LedgerError(f"unknown key {key_id!r}")
        row = self.key(key_id)
        if row is None:
            raise LedgerError(f"unknown key {key_id!r}")
        return row

    def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Period -> (spent yuan, held yuan) of one key."""
        marks = ", ".join("?" * len(periods))
        sql = f"SELECT period, spent_q, held_q FROM key_spend WHERE key_id = ? AND period IN ({marks})"
        rows = self._read(sql, (key_id, *periods))
        return {period: (spent / YUAN_Q, held / YUAN_Q) for period, spent, held in rows}

    def chain_orphans(self) -> tuple[int | None, int]:
        """(first usage row id no settled hold made, how many settled holds lack a usage row)."""
        (forged,) = self._read(
            "SELECT MIN(u.id) FROM usage u LEFT JOIN holds h ON h.id = u.hold_id AND h.state = 'settled'"
            " WHERE h.id IS NULL"
        )[0]
        (missing,) = self._read(
            "SELECT COUNT(*) FROM holds h LEFT JOIN usage u ON u.hold_id = h.id"
            " WHERE h.state = 'settled' AND u.id IS NULL"
        )[0]
        return forged, int(missing)

    def chain_rows(self, batch: int = 5000) -> Iterator[tuple[int, tuple[Any, ...], str, str]]:
        """Every usage row as ``(id, HASHED_COLUMNS values, prev_hash, hash)``, in id order."""
        columns = ", ".join(HASHED_COLUMNS)
        last = -1
        while True:
            sql = f"SELECT {columns}, prev_hash, hash FROM usage WHERE id > ? ORDER BY id LIMIT ?"
            rows = self._read(sql, (last, batch))
            for r in rows:
                yield r[0], tuple(r[:-2]), r[-2], r[-1]
            if len(rows) < batch:
                return
            last = rows[-1][0]
