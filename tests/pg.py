"""PostgreSQL for tests: the DSN from SUANLI_TEST_PG_DSN, and a fresh schema per use.

Every ledger a test opens on PostgreSQL lives in a schema of its own named after this test
run (pid and a random tag), so parallel runs and earlier runs never see each other's rows;
advisory-lock keys derive from the schema too. Schemas are dropped when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from itertools import count

import pytest

__all__ = ["PG_SKIP", "drop_schema", "drop_schema_sync", "fresh_pg_url", "pg_dsn", "requires_pg"]

PG_SKIP = "PostgreSQL tests need SUANLI_TEST_PG_DSN (CI sets postgresql://postgres@127.0.0.1:5432/test)"

_RUN = f"{os.getpid()}_{secrets.token_hex(3)}"
_SEQ = count(1)


def pg_dsn() -> str | None:
    return os.environ.get("SUANLI_TEST_PG_DSN") or None


requires_pg = pytest.mark.skipif(pg_dsn() is None, reason=PG_SKIP)


def fresh_pg_url() -> str:
    """A ledger URL on the test server with a schema no one has used; skips without a DSN."""
    dsn = pg_dsn()
    if dsn is None:
        pytest.skip(PG_SKIP)
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}schema=t_{_RUN}_{next(_SEQ)}"


async def drop_schema(url: str) -> None:
    """Drop the schema of ``url`` and everything in it."""
    import asyncpg

    from suanli.router.ledger.postgres.schema import pg_url

    parsed = pg_url(url)
    conn = await asyncpg.connect(parsed.dsn, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {parsed.schema} CASCADE")
    finally:
        await conn.close()


def drop_schema_sync(url: str) -> None:
    """``drop_schema`` from sync code, outside any running loop."""
    asyncio.run(drop_schema(url))
