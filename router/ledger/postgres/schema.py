"""The PostgreSQL ledger's schema: URL parsing, connections, and versioned migrations.

The tables and storage conventions are ``ledger/tables.py``'s (the same as SQLite's), in
PostgreSQL's types: ``*_q`` columns are BIGINT fixed point (units x ``vouchers.scale``), times
DOUBLE PRECISION epoch seconds (UTC), so both drivers hold the very same numbers and hash the
very same usage rows.

``postgresql://user@host:5432/db?schema=NAME`` keeps every table in schema NAME (default
``suanli``), created if missing: one database can hold several ledgers (tests use a fresh
schema per run). Other query options go to the driver unchanged.

Migrations run at start-up under a transaction-level advisory lock, so replicas starting
together apply each version once; a replica newer than the database upgrades it, an older
one refuses to run on a schema it does not know.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from suanli.router.ledger import adjust, figures, tables
from suanli.router.ledger.chain import GENESIS
from suanli.router.ledger.postgres.escrow_sql import ESCROW_MIGRATION
from suanli.router.ledger.url import PG_SCHEMES as _SCHEMES
from suanli.router.ledger.url import is_pg_url

__all__ = [
    "MIGRATIONS",
    "PgUrl",
    "SessionLimits",
    "connect",
    "create_pool",
    "is_pg_url",
    "lock_space",
    "migrate",
    "pg_url",
]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

POSTGRES = tables.Dialect(int8="BIGINT", real="DOUBLE PRECISION")

# version n (1-based) is MIGRATIONS[n - 1]; append only, never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # last_hold_q: what the newest RESERVE took (PostgreSQL 15 cannot RETURN the old row; sql.py).
        tables.vouchers_table(POSTGRES, extra=("last_hold_q BIGINT NOT NULL DEFAULT 0",)),
        # Which ledger instances (replicas) are alive: postgres/owners.py.
        tables.create_table("owners", (
            "id TEXT PRIMARY KEY",
            "lock_key INTEGER NOT NULL UNIQUE",
            "host TEXT NOT NULL",
            "pid INTEGER NOT NULL",
            "opened DOUBLE PRECISION NOT NULL",
            "seen DOUBLE PRECISION NOT NULL",
            "closed DOUBLE PRECISION",
        )),
        # The scale on the hold too: a settle claims the hold and learns its scale in one statement.
        tables.holds_table(POSTGRES, with_scale=True),
        "CREATE INDEX holds_pending_owner ON holds(owner) WHERE state = 'pending'",
        "CREATE INDEX holds_pending_created ON holds(created) WHERE state = 'pending'",
        tables.usage_table(POSTGRES),
        *tables.USAGE_INDEXES,
        # The tail of the hash chain, one row: settles from every replica lock it in turn,
        # which is what makes the usage ids and prev_hash links one total order.
        """CREATE TABLE chain_head (
            one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
            last_id BIGINT NOT NULL,
            last_hash TEXT NOT NULL
        )""",
        f"INSERT INTO chain_head (last_id, last_hash) VALUES (0, '{GENESIS}')",
        tables.exhausted_table(POSTGRES),
    ),
    (
        # The planner (router/core/replica.py): the leader's newest plans, and the voucher shadow
        # prices of the newest one, one row per voucher.
        """CREATE TABLE plans (
            version BIGSERIAL PRIMARY KEY,
            leader TEXT NOT NULL,
            published DOUBLE PRECISION NOT NULL,
            plan TEXT NOT NULL
        )""",
        """CREATE TABLE shadow_prices (
            voucher_id TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            yuan_per_unit DOUBLE PRECISION NOT NULL
        )""",
        # Who leads now (for status and tests; the advisory lock is what decides).
        """CREATE TABLE leader (
            one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
            replica TEXT NOT NULL,
            since DOUBLE PRECISION NOT NULL
        )""",
        # Requests every replica saw, for the leader's forecast of the merged demand.
        """CREATE TABLE demand_events (
            id BIGSERIAL PRIMARY KEY,
            replica TEXT NOT NULL,
            work_class TEXT NOT NULL,
            origin TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens DOUBLE PRECISION NOT NULL,
            output_tokens DOUBLE PRECISION NOT NULL,
            window_s DOUBLE PRECISION NOT NULL,
            at_s DOUBLE PRECISION NOT NULL
        )""",
    ),
    tables.key_tables(POSTGRES),  # virtual keys and key budgets (router/ledger/postgres/keys.py)
    # GET /v1/requests/{id}, and the platform balance figures reconciliation counts from.
    ("CREATE INDEX usage_request ON usage(request_id)", figures.figures_table(POSTGRES)),
    ESCROW_MIGRATION,  # voucher and key-budget escrow for replicas (postgres/escrow.py)
    # Operators' voucher adjustments (ledger/adjust.py); a key's priority when supply shrinks.
    (adjust.adjustments_table(POSTGRES.real),
     "ALTER TABLE keys ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'"),
    # Prompt-cache figures of a settled request, for `report` (not hashed: the chain is DESIGN's).
    ("ALTER TABLE usage ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0",
     "ALTER TABLE usage ADD COLUMN cache_saved_yuan DOUBLE PRECISION NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True, slots=True)
class PgUrl:
    """A ledger URL split into what the driver gets and the schema suanli keeps its tables in."""

    dsn: str
    schema: str


def pg_url(url: str) -> PgUrl:
    """Parse ``postgresql://...[?schema=NAME]``; ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        shown = ", ".join(_SCHEMES)
        raise ValueError(f"ledger url scheme {parts.scheme!r} is not a PostgreSQL one ({shown})")
    schema = "suanli"
    passed = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "schema":
            schema = value
        else:
            passed.append((name, value))
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"ledger url schema {schema!r} must be a lower-case SQL identifier")
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(passed), ""))
    return PgUrl(dsn, schema)


def lock_space(schema: str, purpose: str) -> int:
    """The first key of two-key advisory locks for ``purpose`` in ``schema`` (a positive int32).

    Advisory locks are per database, not per schema: deriving the key from the schema keeps
    two ledgers in one database (parallel test runs) from sharing a leader or an owner lock.
    """
    return zlib.crc32(f"suanli:{schema}:{purpose}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds on every session's waits (config ``ledger.lock_timeout_s`` and so on).

    A replica stopped (SIGSTOP, a frozen VM) inside a transaction keeps its row locks: without
    bounds every other replica's settle queues behind it for as long as it is stopped. With
    them a waiting statement gives up after ``lock_timeout_s`` (the caller retries or answers
    503) and the server ends the stopped session after ``idle_in_transaction_s``, rolling back
    its transaction and freeing the rows.
    """

    lock_timeout_s: float = 1.0
    idle_in_transaction_s: float = 2.0


def _settings(url: PgUrl, limits: SessionLimits, name: str) -> dict[str, str]:
    # READ COMMITTED is PostgreSQL's default; set it anyway: the hold's safety argument needs it.
    return {"search_path": url.schema, "application_name": name,
            "default_transaction_isolation": "read committed",
            "lock_timeout": str(max(1, round(limits.lock_timeout_s * 1000))),
            "idle_in_transaction_session_timeout": str(max(1, round(limits.idle_in_transaction_s * 1000)))}


async def connect(
    url: PgUrl, limits: SessionLimits | None = None, *, name: str = "suanli"
) -> asyncpg.Connection:
    """One connection whose search_path is the ledger's schema (advisory-lock sessions).

    ``name`` is its ``application_name`` (a replica's ``suanli OWNER``: pg_stat_activity tells them apart).
    """
    settings = _settings(url, limits or SessionLimits(), name)
    return await asyncpg.connect(url.dsn, server_settings=settings, timeout=10)


async def create_pool(url: PgUrl, *, max_size: int = 10, limits: SessionLimits | None = None,
                      name: str = "suanli", on_query: Callable[[Any], None] | None = None) -> asyncpg.Pool:
    """The pool the request path uses; statements are prepared once per connection.

    ``on_query`` is called for every statement a pooled session sends (round-trip counting).
    """

    async def init(conn: asyncpg.Connection) -> None:
        if on_query is not None:
            conn.add_query_logger(on_query)

    return await asyncpg.create_pool(url.dsn, min_size=1, max_size=max_size,
                                     server_settings=_settings(url, limits or SessionLimits(), name),
                                     timeout=10, command_timeout=30, init=init)


async def migrate(conn: asyncpg.Connection, schema: str,
                  migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Create ``schema`` and bring it to the newest version, once, across replicas; the version."""
    async with conn.transaction():
        # Replicas starting together queue here while the first migrates: longer than lock_timeout.
        await conn.execute("SET LOCAL lock_timeout = '120s'")
        # Transaction-scoped: released at COMMIT or when a crashed migrator's session ends.
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", lock_space(schema, "migrate"))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.schema_version (version INTEGER NOT NULL)")
        current = await conn.fetchval(f"SELECT version FROM {schema}.schema_version")
        known = current is not None
        current = int(current or 0)
        if current > len(migrations):
            raise ValueError(f"ledger schema version {current} is newer than this suanli ({len(migrations)})")
        for statements in migrations[current:]:
            for statement in statements:
                await conn.execute(statement)  # unqualified names land in search_path, i.e. the schema
        if not known:
            await conn.execute(f"INSERT INTO {schema}.schema_version (version) VALUES ($1)", len(migrations))
        elif current < len(migrations):
            await conn.execute(f"UPDATE {schema}.schema_version SET version = $1", len(migrations))
    return len(migrations)
