"""Which PostgreSQL failures are the database's state, not the request's: retry later, never a 500.

A lost connection (the server restarted, ``pg_terminate_backend``), a lock wait past
``lock_timeout`` (a stopped replica holds the row), a session ended by
``idle_in_transaction_session_timeout``, a server refusing connections: each leaves the
statement undone (or, for a lost connection mid-statement, unknown; the callers handle that)
and says nothing about the request. ``unavailable`` turns them into ``LedgerUnavailableError``
(503 with Retry-After) at the driver's boundary.
"""

from __future__ import annotations

import asyncpg

from suanli.router.errors import LedgerUnavailableError

__all__ = ["TRANSIENT", "unavailable"]

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, and TimeoutError (a pool acquire or command_timeout)
    asyncpg.InterfaceError,  # "connection is closed", a released connection
    asyncpg.PostgresConnectionError,
    asyncpg.LockNotAvailableError,  # lock_timeout
    asyncpg.QueryCanceledError,  # statement_timeout
    asyncpg.IdleInTransactionSessionTimeoutError,
    asyncpg.OperatorInterventionError,  # admin shutdown (pg_terminate_backend), cannot connect now
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    # A transaction whose connection the server ended mid-way: COMMIT then finds the protocol
    # in the failed statement's state ("cannot switch to state 15"). The statement did not commit.
    asyncpg.InternalClientError,
)


def unavailable(what: str, exc: BaseException, *, retry_after_s: float = 1.0) -> LedgerUnavailableError:
    """The client-facing error for a transient database failure during ``what``."""
    kind = type(exc).__name__
    return LedgerUnavailableError(
        f"the ledger database is unavailable ({what}: {kind}); try again shortly", retry_after_s=retry_after_s
    )
