"""The audit (``router.audit``) over a PostgreSQL ledger: one consistent snapshot, read async.

``verify`` and ``export_csv`` walk a ledger synchronously (``chain_rows``, ``chain_orphans``,
``keys``, ``usage``). Here those are read in one REPEATABLE READ transaction, so settles
running on other replicas meanwhile can neither tear the chain nor make a settled hold look
like it lacks its row, and the audit then runs on the snapshot. ``suanli audit`` reads it
over a connection of its own (it registers no ledger owner and voids nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg

from suanli.router.ledger.keys import _KEY_COLUMNS, KeyRow, _key_row
from suanli.router.ledger.postgres.schema import connect, pg_url
from suanli.router.ledger.postgres.sql import USAGE_COLUMNS
from suanli.router.ledger.sqlite.reads import usage_row
from suanli.router.ledger.types import UsageRow

__all__ = ["ChainSnapshot", "read_snapshot", "snapshot_of"]


class ChainSnapshot:
    """The usage chain, its orphans and the keys of a PostgreSQL ledger at one instant."""

    def __init__(self, usage: list[tuple[Any, ...]], orphans: tuple[int | None, int], keys: list[KeyRow]):
        self._usage = usage
        self._orphans = orphans
        self._keys = keys

    def chain_rows(self) -> Iterator[tuple[int, tuple[Any, ...], str, str]]:
        for r in self._usage:
            yield r[0], r[:21], r[21], r[22]

    def chain_orphans(self) -> tuple[int | None, int]:
        return self._orphans

    def keys(self) -> list[KeyRow]:
        return self._keys

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        lo = float("-inf") if since is None else since.timestamp()
        hi = float("inf") if until is None else until.timestamp()
        return [usage_row(r) for r in self._usage if lo <= r[3] < hi]


async def snapshot_of(conn: asyncpg.Connection) -> ChainSnapshot:
    """Read the snapshot on ``conn`` (a pooled connection or the CLI's own)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        usage = [tuple(r) for r in await conn.fetch(f"SELECT {USAGE_COLUMNS} FROM usage ORDER BY id")]
        forged = await conn.fetchval(
            "SELECT MIN(u.id) FROM usage u LEFT JOIN holds h ON h.id = u.hold_id AND h.state = 'settled'"
            " WHERE h.id IS NULL"
        )
        missing = await conn.fetchval(
            "SELECT COUNT(*) FROM holds h LEFT JOIN usage u ON u.hold_id = h.id"
            " WHERE h.state = 'settled' AND u.id IS NULL"
        )
        key_rows = []  # a ledger last opened by a suanli from before keys has no keys table
        if await conn.fetchval("SELECT to_regclass('keys') IS NOT NULL"):
            key_rows = await conn.fetch(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created, id")
        keys = [_key_row(tuple(r)) for r in key_rows]
    return ChainSnapshot(usage, (None if forged is None else int(forged), int(missing)), keys)


async def read_snapshot(url: str) -> ChainSnapshot:
    """The snapshot of the ledger at ``url``, over a connection opened and closed here."""
    conn = await connect(pg_url(url))
    try:
        return await snapshot_of(conn)
    finally:
        await conn.close()
