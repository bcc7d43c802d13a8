"""Where files, batches and fine-tuning jobs live: tables in the ledger's SQLite file, bytes on disk.

The tables sit beside the ledger's own (created with ``IF NOT EXISTS``, so the ledger's
migrations stay its own) and are reached through a second connection to the same WAL
file. File contents go under the data directory: ``<ledger directory>/files/`` (a
temporary directory for an in-memory ledger). With a PostgreSQL ledger the tables live in
``./suanli-data/workloads.db`` instead: one replica runs a batch, the ledger stays shared.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from suanli.router.ledger.sqlite.schema import connect, sqlite_path

__all__ = ["WorkloadDB", "data_dir_for"]

_TABLES = """
CREATE TABLE IF NOT EXISTS wl_files (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    path TEXT NOT NULL,
    lines INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    key_id TEXT
);
CREATE TABLE IF NOT EXISTS wl_batches (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    origin TEXT NOT NULL,
    key_id TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    times TEXT NOT NULL DEFAULT '{}',
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS wl_batch_lines (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    body TEXT NOT NULL,
    region TEXT,
    start_s REAL,
    tokens INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    ok INTEGER,
    entry TEXT,
    ran_region TEXT,
    ran_at REAL,
    cash_yuan REAL NOT NULL DEFAULT 0,
    cost_yuan REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE TABLE IF NOT EXISTS wl_ft_jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    training_file TEXT NOT NULL,
    validation_file TEXT,
    hyperparameters TEXT NOT NULL,
    suffix TEXT,
    seed INTEGER,
    metadata TEXT,
    origin TEXT NOT NULL,
    key_id TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deadline_s REAL NOT NULL,
    estimated_tokens INTEGER NOT NULL,
    region TEXT,
    start_s REAL,
    voucher TEXT,
    upstream_id TEXT,
    trained_tokens INTEGER,
    finished_at INTEGER,
    fine_tuned_model TEXT,
    cost_yuan REAL,
    cash_yuan REAL,
    error TEXT,
    settled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS wl_ft_events (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS wl_ft_events_job ON wl_ft_events(job_id, seq);
"""


def data_dir_for(ledger_url: str) -> Path:
    """The data directory: beside a SQLite ledger file; ``./suanli-data`` beside a server ledger."""
    try:
        path, _ = sqlite_path(ledger_url)
    except ValueError:
        return Path("suanli-data").resolve()
    if path in ("", ":memory:"):
        return Path(tempfile.mkdtemp(prefix="suanli-data-"))
    return Path(path).resolve().parent


def _db_path(ledger_url: str, data_dir: Path) -> str:
    try:
        path, _ = sqlite_path(ledger_url)
    except ValueError:
        path = ""
    if path in ("", ":memory:"):
        return str(data_dir / "workloads.db")
    return path


class WorkloadDB:
    """One connection to the ledger file for the workload tables; calls are short and serialised."""

    def __init__(self, ledger_url: str, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or data_dir_for(ledger_url)
        self.files_dir = self.data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = connect(_db_path(ledger_url, self.data_dir))
        self._lock = threading.Lock()
        with self.transaction() as c:
            for statement in filter(str.strip, _TABLES.split(";")):
                c.execute(statement)
            # Files of a database made before files had owners: add the column (NULL = the master's).
            if "key_id" not in {r[1] for r in c.execute("PRAGMA table_info(wl_files)")}:
                c.execute("ALTER TABLE wl_files ADD COLUMN key_id TEXT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("the workload database is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; the rows it changed."""
        with self.transaction() as c:
            return c.execute(sql, params).rowcount

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("the workload database is closed")
            cursor = conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

    def row(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None
