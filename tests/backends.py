"""Running a test on both ledger backends: the ``ledger_opts`` fixture and ``read``.

``ledger_opts`` is what ``small_config`` needs for SQLite (nothing) or for a fresh
PostgreSQL schema (skipped with a reason without SUANLI_TEST_PG_DSN, dropped afterwards).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pg import PG_SKIP, drop_schema_sync, fresh_pg_url, pg_dsn

__all__ = ["BACKENDS", "ledger_opts", "read", "sql"]

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(pg_dsn() is None, reason=PG_SKIP))]


@pytest.fixture(params=BACKENDS)
def ledger_opts(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {}
        return
    url = fresh_pg_url()
    try:
        yield {"ledger": {"url": url}}
    finally:
        drop_schema_sync(url)


def read(proxy: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn(router)`` on the proxy's ledger: on its loop for SQLite, from this thread on PostgreSQL.

    (On PostgreSQL ``router.ledger`` makes blocking calls for threads off the loop.)
    """
    if proxy.router.accounts.ledger.shared is not None:
        return fn(proxy.router)
    return proxy.call(fn)


def sql(ledger_url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one SQL statement on the ledger's database directly (as a tamperer would); its rows."""
    if ledger_url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(ledger_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement).fetchall()

    async def run() -> list[tuple[Any, ...]]:
        import asyncpg

        from suanli.router.ledger.postgres.schema import pg_url

        parsed = pg_url(ledger_url)
        conn = await asyncpg.connect(parsed.dsn, server_settings={"search_path": parsed.schema}, timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(statement)]
        finally:
            await conn.close()

    return asyncio.run(run())
