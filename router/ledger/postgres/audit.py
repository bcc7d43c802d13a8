"""The audit (``ledger/audit.py``) over a PostgreSQL ledger: one consistent snapshot, read async.

``verify`` and ``export_csv`` walk a ledger synchronously (``chain_rows``, ``chain_orphans``,
``keys``, ``usage``). Here those are read in one REPEATABLE READ transaction, so settles
running on other replicas meanwhile can neither tear the chain nor make a settled hold look
like it lacks its row, and the audit then runs on the snapshot. ``suanli audit`` reads it
over a connection of its own (it registers no ledger owner and voids nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from suanli.router.ledger import usage
from suanli.router.ledger.keys import KEY_COLUMNS, KeyRow, key_row
from suanli.router.ledger.postgres.chains import CHAIN_HEADS, chain_parts, split_chains
from suanli.router.ledger.postgres.schema import connect, pg_url
from suanli.router.ledger.postgres.vouchers import voucher_statuses
from suanli.router.ledger.types import UsageRow, VoucherStatus

__all__ = ["ChainSnapshot", "read_snapshot", "snapshot_of"]


class ChainSnapshot:
    """The usage chain, its orphans and the keys of a PostgreSQL ledger at one instant."""

    def __init__(self, rows: list[tuple[Any, ...]], orphans: tuple[int | None, int], keys: list[KeyRow],
                 heads: list[tuple[Any, ...]] | None = None, vouchers: list[VoucherStatus] | None = None):
        self._chains = split_chains(rows)  # rows read as USAGE_COLUMNS, CACHE_COLUMNS, chain
        self._rows = sorted((r for chain in self._chains.values() for r in chain), key=lambda r: r[0])
        self._heads = heads or []
        self._orphans = orphans
        self._keys = keys
        self._vouchers = vouchers or []

    def vouchers(self) -> list[VoucherStatus]:
        """Every voucher's status at the snapshot (``suanli report`` reads the packages' losses)."""
        return self._vouchers

    def chain_rows(self) -> Iterator[tuple[int, tuple[Any, ...], str, str]]:
        for r in self._rows:
            yield usage.chain_entry(r)

    def chain_parts(self) -> list[tuple[str, Iterator[tuple[int, Any, str, str]], tuple[int, str] | None]]:
        """One chain per writer (``postgres/chains.py``), each with the head its writer recorded."""
        return chain_parts(self._chains, self._heads)

    def chain_orphans(self) -> tuple[int | None, int]:
        return self._orphans

    def keys(self) -> list[KeyRow]:
        return self._keys

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        lo, hi = usage.time_bounds(since, until)
        return [usage.usage_row(r) for r in self._rows if lo <= r[3] < hi]


async def snapshot_of(conn: asyncpg.Connection) -> ChainSnapshot:
    """Read the snapshot on ``conn`` (a pooled connection or the CLI's own)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # A ledger no suanli with the cache columns has opened yet reads as no hits.
        known = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = 'usage' AND column_name = 'cached_tokens'")
        cache = usage.CACHE_COLUMNS if known else "0, 0.0"
        read = f"SELECT {usage.USAGE_COLUMNS}, {cache}, chain FROM usage ORDER BY id"
        rows = [tuple(r) for r in await conn.fetch(read)]
        heads = [tuple(r) for r in await conn.fetch(CHAIN_HEADS)]
        found = usage.orphans(await conn.fetchrow(usage.CHAIN_ORPHANS))
        key_rows = []  # a ledger last opened by a suanli from before keys has no keys table
        if await conn.fetchval("SELECT to_regclass('keys') IS NOT NULL"):
            key_rows = await conn.fetch(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created, id")
        keys = [key_row(tuple(r)) for r in key_rows]
        vouchers = await voucher_statuses(conn, now=datetime.now(UTC))
    return ChainSnapshot(rows, found, keys, heads, vouchers)


async def read_snapshot(url: str) -> ChainSnapshot:
    """The snapshot of the ledger at ``url``, over a connection opened and closed here."""
    conn = await connect(pg_url(url))
    try:
        return await snapshot_of(conn)
    finally:
        await conn.close()
