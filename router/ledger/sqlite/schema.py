"""The ledger's SQLite file: URL parsing, connection pragmas, and ordered SQL migrations.

The tables and storage conventions are ``ledger/tables.py``'s (the same as PostgreSQL's), in
SQLite's types: INTEGER for fixed point (``id INTEGER PRIMARY KEY`` is the rowid), REAL for
floats and epoch seconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from suanli.router.ledger import adjust, figures, tables
from suanli.router.ledger.url import PG_SCHEMES, is_pg_url

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "PG_SCHEMES",
    "SqliteOptions",
    "connect",
    "is_pg_url",
    "migrate",
    "sqlite_options",
    "sqlite_path",
]

SQLITE = tables.Dialect(int8="INTEGER", real="REAL")

_SYNCHRONOUS = ("NORMAL", "FULL")

# A writer from another process (the CLI, a second server) holds the lock for well under a
# millisecond per transaction; 5 s only guards against a stuck or checkpointing peer.
BUSY_TIMEOUT_S = 5.0

# version n (1-based) is MIGRATIONS[n - 1]; append only, never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        tables.vouchers_table(SQLITE),
        # Which Ledger instances may still settle their holds (sqlite/owners.py).
        tables.create_table("owners", (
            "id TEXT PRIMARY KEY",
            "host TEXT NOT NULL",
            "pid INTEGER NOT NULL",
            "pid_start TEXT NOT NULL",
            "opened REAL NOT NULL",
            "closed REAL",
        )),
        tables.holds_table(SQLITE, with_scale=False),
        "CREATE INDEX holds_pending ON holds(owner, voucher_id) WHERE state = 'pending'",
        tables.usage_table(SQLITE),
        *tables.USAGE_INDEXES,
    ),
    (tables.exhausted_table(SQLITE),),
    tables.key_tables(SQLITE),
    # GET /v1/requests/{id}, and the platform balance figures reconciliation counts from.
    ("CREATE INDEX usage_request ON usage(request_id)", figures.figures_table(SQLITE)),
    # Operators' voucher adjustments (ledger/adjust.py); a key's priority when supply shrinks.
    (adjust.adjustments_table(SQLITE.real),
     "ALTER TABLE keys ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'"),
    # Prompt-cache figures of a settled request, for `report` (not hashed: the chain is DESIGN's).
    ("ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0",
     "ALTER TABLE usage ADD COLUMN cache_saved_yuan REAL NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True, slots=True)
class SqliteOptions:
    """A SQLite ledger URL's options (``?synchronous=FULL&max_page_count=N&spare_pages=N``)."""

    synchronous: str = "NORMAL"
    max_page_count: int | None = None  # cap the file's size in pages (tests of a full disk; quotas)
    spare_pages: int = 64  # room kept back for settles when the disk fills (sqlite/space.py)


def sqlite_path(url: str) -> tuple[str, str]:
    """``(file path, synchronous)`` of ``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite:///:memory:``.

    An optional ``?synchronous=FULL`` trades about 150 us per commit (one fsync) for
    surviving power loss too; the default NORMAL survives a killed process.
    """
    path, options = sqlite_options(url)
    return path, options.synchronous


def sqlite_options(url: str) -> tuple[str, SqliteOptions]:
    """``(file path, options)`` of a SQLite ledger URL; ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "sqlite":
        shown = scheme if sep else url
        raise ValueError(f"ledger url scheme {shown!r} is not supported (only sqlite:///PATH for now)")
    rest, _, query = rest.partition("?")
    if not rest.startswith("/") or len(rest) < 2:
        raise ValueError(f"ledger url {url!r} must look like sqlite:///relative.db or sqlite:////abs/path.db")
    synchronous, max_pages, spare = "NORMAL", None, 64
    for option in filter(None, query.split("&")):
        name, _, value = option.partition("=")
        if name == "synchronous" and value.upper() in _SYNCHRONOUS:
            synchronous = value.upper()
        elif name in ("max_page_count", "spare_pages") and value.isdigit():
            if name == "max_page_count":
                max_pages = int(value)
            else:
                spare = int(value)
        else:
            raise ValueError(f"ledger url option {option!r} is not supported "
                             "(synchronous=NORMAL|FULL, max_page_count=N, spare_pages=N)")
    return rest[1:], SqliteOptions(synchronous, max_pages, spare)


def connect(
    path: str, *, synchronous: str = "NORMAL", max_page_count: int | None = None
) -> sqlite3.Connection:
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
    if max_page_count is not None:
        conn.execute(f"PRAGMA max_page_count={int(max_page_count)}")
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
