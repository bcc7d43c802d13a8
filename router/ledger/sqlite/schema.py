"""The ledger's SQLite file: URL parsing, connection pragmas, and ordered SQL migrations.

Storage conventions (one place, so every reader agrees):
- Money and quota are INTEGER fixed point: ``*_q`` columns hold units x ``vouchers.scale``
  (10**6 per token for ``tokens`` vouchers, 10**9 per yuan otherwise). Integer arithmetic
  makes ``balance == amount - sum(usage.voucher_units)`` exact and ``balance >= 0`` a hard
  fact, not a float approximation. Plain REAL copies of units live beside them for humans.
- Times are REAL epoch seconds (UTC); a voucher's validity window keeps its config ISO text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from suanli.router.ledger.keys import KEYS_MIGRATION

__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "PG_SCHEMES", "connect", "is_pg_url", "migrate", "sqlite_path"]

PG_SCHEMES = ("postgresql", "postgres")

_SYNCHRONOUS = ("NORMAL", "FULL")

# A writer from another process (the CLI, a second server) holds the lock for well under a
# millisecond per transaction; 5 s only guards against a stuck or checkpointing peer.
BUSY_TIMEOUT_S = 5.0

# version n (1-based) is MIGRATIONS[n - 1]; append only, never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE vouchers (
            id TEXT PRIMARY KEY,
            region TEXT NOT NULL,
            kind TEXT NOT NULL,
            rate REAL,
            models TEXT,
            classes TEXT,
            valid_from TEXT,
            expires TEXT,
            scale INTEGER NOT NULL,
            amount_q INTEGER NOT NULL,
            balance_q INTEGER NOT NULL CHECK (balance_q >= 0),
            held_q INTEGER NOT NULL DEFAULT 0 CHECK (held_q >= 0 AND held_q <= balance_q)
        )""",
        """CREATE TABLE owners (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            pid_start TEXT NOT NULL,
            opened REAL NOT NULL,
            closed REAL
        )""",
        """CREATE TABLE holds (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            request_id TEXT NOT NULL,
            key_id TEXT,
            region TEXT NOT NULL,
            model TEXT NOT NULL,
            work_class TEXT NOT NULL,
            origin TEXT NOT NULL,
            voucher_id TEXT,
            held_q INTEGER NOT NULL,
            held_units REAL NOT NULL,
            created REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            resolved REAL
        )""",
        "CREATE INDEX holds_pending ON holds(owner, voucher_id) WHERE state = 'pending'",
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            hold_id TEXT NOT NULL UNIQUE,
            request_id TEXT NOT NULL,
            time REAL NOT NULL,
            key_id TEXT,
            region TEXT NOT NULL,
            model TEXT NOT NULL,
            work_class TEXT NOT NULL,
            origin TEXT NOT NULL,
            voucher_id TEXT,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            cost_yuan REAL NOT NULL,
            cash_yuan REAL NOT NULL,
            voucher_units REAL NOT NULL,
            voucher_q INTEGER NOT NULL,
            voucher_yuan REAL NOT NULL,
            latency_ms REAL NOT NULL,
            ttft_ms REAL,
            attempts INTEGER NOT NULL,
            status INTEGER NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        "CREATE INDEX usage_time ON usage(time)",
        "CREATE INDEX usage_voucher_time ON usage(voucher_id, time)",
    ),
    (
        # A platform said the prepaid balance (a voucher, or the region's cash) is gone.
        """CREATE TABLE exhausted (
            account TEXT PRIMARY KEY,
            region TEXT,
            voucher_id TEXT,
            since REAL NOT NULL,
            reason TEXT NOT NULL
        )""",
    ),
    KEYS_MIGRATION,
)


def sqlite_path(url: str) -> tuple[str, str]:
    """``(file path, synchronous)`` of ``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite:///:memory:``.

    An optional ``?synchronous=FULL`` trades about 150 us per commit (one fsync) for
    surviving power loss too; the default NORMAL survives a killed process.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "sqlite":
        shown = scheme if sep else url
        raise ValueError(f"ledger url scheme {shown!r} is not supported (only sqlite:///PATH for now)")
    rest, _, query = rest.partition("?")
    if not rest.startswith("/") or len(rest) < 2:
        raise ValueError(f"ledger url {url!r} must look like sqlite:///relative.db or sqlite:////abs/path.db")
    synchronous = "NORMAL"
    for option in filter(None, query.split("&")):
        name, _, value = option.partition("=")
        if name != "synchronous" or value.upper() not in _SYNCHRONOUS:
            raise ValueError(f"ledger url option {option!r} is not supported (synchronous=NORMAL|FULL)")
        synchronous = value.upper()
    return rest[1:], synchronous


def connect(path: str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """An autocommit connection (we issue BEGIN ourselves) in WAL mode with a busy timeout.

    synchronous=NORMAL: in WAL mode a commit is written to the WAL before COMMIT returns, so
    a killed process loses nothing it committed; only an OS crash or power loss may drop the
    last transactions. FULL adds an fsync per commit (measured in benchmarks/ledger.py).
    SQLite's default checkpoint stays: the COMMIT that takes the WAL past 1000 pages (about
    one request in 150) copies it back, ~2.5 ms. A background checkpointer thread was tried
    and measured worse: on ext4 the writer's WAL append waits for the checkpoint's fsync.
    """
    if path not in ("", ":memory:"):
        # sqlite:///data/suanli.db on a fresh machine: make data/, as any file-writing tool would.
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring the schema to the newest version in one IMMEDIATE transaction; the version reached."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = 0 if row is None else int(row[0])
        if current > len(migrations):
            raise ValueError(f"ledger schema version {current} is newer than this suanli ({len(migrations)})")
        for statements in migrations[current:]:
            for statement in statements:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(migrations),))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (len(migrations),))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(migrations)


def is_pg_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL ledger (here, so SQLite users never import asyncpg)."""
    return url.partition("://")[0] in PG_SCHEMES
