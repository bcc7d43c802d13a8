"""The ledger's tables, written once for both SQL dialects, and how values are stored in them.

Storage conventions (one place, so every reader and both drivers agree):
- Money and quota are integer fixed point: ``*_q`` columns hold units x ``vouchers.scale``
  (``rules.scale_of``). Plain floating copies of units live beside them for humans.
- Times are floating epoch seconds (UTC); a voucher's validity window keeps its config ISO
  text; lists (a voucher's models, a key's regions) are JSON text.

A driver renders a table with its ``Dialect`` (the type names it spells differently); the
columns, their order and their constraints are the same, so both hold the very same numbers
and hash the very same usage rows. Migrations are each driver's (``*/schema.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "Dialect",
    "USAGE_INDEXES",
    "create_table",
    "exhausted_table",
    "holds_table",
    "iso",
    "key_tables",
    "listed",
    "unlisted",
    "usage_table",
    "vouchers_table",
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The type names a driver spells its own way."""

    int8: str  # a 64-bit integer (SQLite: INTEGER, which also makes ``id INTEGER PRIMARY KEY`` the rowid)
    real: str  # a double


def create_table(name: str, columns: Sequence[str]) -> str:
    """``CREATE TABLE name (...)`` with one column (or constraint) a line."""
    body = ",\n".join(f"    {column}" for column in columns)
    return f"CREATE TABLE {name} (\n{body}\n)"


def vouchers_table(d: Dialect, *, extra: Sequence[str] = ()) -> str:
    """One row per voucher: config metadata, and its money as ``balance_q`` and ``held_q``."""
    return create_table("vouchers", (
        "id TEXT PRIMARY KEY",
        "region TEXT NOT NULL",
        "kind TEXT NOT NULL",
        f"rate {d.real}",
        "models TEXT",
        "classes TEXT",
        "valid_from TEXT",
        "expires TEXT",
        f"scale {d.int8} NOT NULL",
        f"amount_q {d.int8} NOT NULL",
        f"balance_q {d.int8} NOT NULL CHECK (balance_q >= 0)",
        f"held_q {d.int8} NOT NULL DEFAULT 0 CHECK (held_q >= 0 AND held_q <= balance_q)",
        *extra,
    ))


def holds_table(d: Dialect, *, with_scale: bool) -> str:
    """One row per two-phase hold; ``with_scale`` keeps the voucher's scale on the hold too."""
    return create_table("holds", (
        "id TEXT PRIMARY KEY",
        "owner TEXT NOT NULL",
        "request_id TEXT NOT NULL",
        "key_id TEXT",
        "region TEXT NOT NULL",
        "model TEXT NOT NULL",
        "work_class TEXT NOT NULL",
        "origin TEXT NOT NULL",
        "voucher_id TEXT",
        *((f"scale {d.int8} NOT NULL",) if with_scale else ()),
        f"held_q {d.int8} NOT NULL",
        f"held_units {d.real} NOT NULL",
        f"created {d.real} NOT NULL",
        "state TEXT NOT NULL DEFAULT 'pending'",
        f"resolved {d.real}",
    ))


def usage_table(d: Dialect) -> str:
    """One row per settled request, hash-chained in ``id`` order (``chain``)."""
    return create_table("usage", (
        f"id {d.int8} PRIMARY KEY",
        "hold_id TEXT NOT NULL UNIQUE",
        "request_id TEXT NOT NULL",
        f"time {d.real} NOT NULL",
        "key_id TEXT",
        "region TEXT NOT NULL",
        "model TEXT NOT NULL",
        "work_class TEXT NOT NULL",
        "origin TEXT NOT NULL",
        "voucher_id TEXT",
        f"prompt_tokens {d.int8} NOT NULL",
        f"completion_tokens {d.int8} NOT NULL",
        f"tokens {d.int8} NOT NULL",
        f"cost_yuan {d.real} NOT NULL",
        f"cash_yuan {d.real} NOT NULL",
        f"voucher_units {d.real} NOT NULL",
        f"voucher_q {d.int8} NOT NULL",
        f"voucher_yuan {d.real} NOT NULL",
        f"latency_ms {d.real} NOT NULL",
        f"ttft_ms {d.real}",
        "attempts INTEGER NOT NULL",
        "status INTEGER NOT NULL",
        "prev_hash TEXT NOT NULL",
        "hash TEXT NOT NULL",
    ))


USAGE_INDEXES = (
    "CREATE INDEX usage_time ON usage(time)",
    "CREATE INDEX usage_voucher_time ON usage(voucher_id, time)",
)


def exhausted_table(d: Dialect) -> str:
    """A platform said the prepaid balance (a voucher, or the region's cash) is gone."""
    return create_table("exhausted", (
        "account TEXT PRIMARY KEY",
        "region TEXT",
        "voucher_id TEXT",
        f"since {d.real} NOT NULL",
        "reason TEXT NOT NULL",
    ))



def key_tables(d: Dialect) -> tuple[str, ...]:
    """Virtual keys (the secret only as its SHA-256), their spend per period, their pending holds.

    ``key_spend``: (key id, period) -> spent and held nano-yuan, a period being
    ``day:YYYY-MM-DD`` or ``month:YYYY-MM`` in the config's timezone. ``key_holds``: hold id ->
    key, periods, held nano-yuan; deleted once the hold resolves.
    """
    return (
        create_table("keys", (
            "id TEXT PRIMARY KEY",
            "name TEXT NOT NULL",
            "secret_sha256 TEXT NOT NULL UNIQUE",
            f"created {d.real} NOT NULL",
            f"revoked {d.real}",
            f"expires {d.real}",
            f"budget_day_q {d.int8}",
            f"budget_month_q {d.int8}",
            "allowed_regions TEXT",
            "allowed_zones TEXT",
            "default_class TEXT",
            "origin TEXT",
            "rpm INTEGER",
        )),
        create_table("key_spend", (
            "key_id TEXT NOT NULL",
            "period TEXT NOT NULL",
            f"spent_q {d.int8} NOT NULL DEFAULT 0",
            f"held_q {d.int8} NOT NULL DEFAULT 0 CHECK (held_q >= 0)",
            "PRIMARY KEY (key_id, period)",
        )),
        create_table("key_holds", (
            "hold_id TEXT PRIMARY KEY",
            "key_id TEXT NOT NULL",
            "day TEXT NOT NULL",
            "month TEXT NOT NULL",
            f"held_q {d.int8} NOT NULL",
        )),
    )


def listed(items: Sequence[str] | None) -> str | None:
    """A list as stored: JSON text, or NULL for none."""
    return None if items is None else json.dumps(list(items))


def unlisted(text: str | None) -> tuple[str, ...] | None:
    """A stored list read back."""
    return None if text is None else tuple(json.loads(text))


def iso(at: datetime | None) -> str | None:
    """A time as stored where the config's own text matters (validity windows): ISO 8601."""
    return None if at is None else at.isoformat()
