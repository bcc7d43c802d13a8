"""Running a test on both ledger backends: the ``ledger_opts`` fixture and ``read``.

``ledger_opts`` is what ``small_config`` needs for SQLite (nothing) or for a fresh
PostgreSQL schema (skipped with a reason without SUANLI_TEST_PG_DSN, dropped afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pg import PG_SKIP, drop_schema_sync, fresh_pg_url, pg_dsn

__all__ = ["BACKENDS", "ledger_opts", "read"]

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

    (On PostgreSQL ``router.ledger`` is a ThreadLedger: blocking calls for threads off the loop.)
    """
    if hasattr(proxy.router.ledger, "pg"):
        return fn(proxy.router)
    return proxy.call(fn)
