"""A full disk on the SQLite ledger: refuse new work cleanly, keep room to settle answered work.

A full disk (or ``PRAGMA max_page_count`` reached) makes SQLite answer ``SQLITE_FULL``; a
peer holding the write lock past the busy timeout, ``SQLITE_BUSY``; a failing device,
``SQLITE_IOERR``. None of them says anything about the request, so they reach the client as
``LedgerUnavailableError`` (503 with Retry-After), never as a 500.

Money first: a request the upstream has already answered must still be recorded. The ledger
keeps a ``spare`` table of padding (``spare_pages`` pages, 64 by default, 256 KiB). When a
write finds the disk full, the ledger enters the *full* state: new holds are refused (503),
the padding is deleted, so its pages go to SQLite's free list, the WAL is checkpointed and
truncated, and the settle is retried in that room, which the settles of in-flight holds
(and nothing else) then use. Every few seconds a refused reserve probes: when the padding
can be written back in full, space has returned and holds are taken again.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from suanli.router.errors import LedgerUnavailableError

__all__ = ["Room", "checkpoint", "is_full", "is_transient", "unavailable"]

log = logging.getLogger("suanli.router.ledger")

_FULL, _BUSY, _LOCKED, _IOERR = 13, 5, 6, 10
_PAD_BYTES = 3000  # one row per page of 4 KiB
PROBE_S = 2.0  # while the disk is full, how often a refused reserve checks whether space returned


def _code(exc: BaseException) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL: the disk, or max_page_count, has no room for the write."""
    return isinstance(exc, sqlite3.OperationalError) and (_code(exc) == _FULL or "full" in str(exc))


def is_transient(exc: BaseException) -> bool:
    """A failure of the database's state (full, busy, I/O), not of the request."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    return is_full(exc) or _code(exc) in (_BUSY, _LOCKED, _IOERR) or "locked" in str(exc)


def unavailable(what: str, exc: BaseException) -> LedgerUnavailableError:
    """The client-facing error for a transient SQLite failure during ``what``."""
    reason = "its disk is full" if is_full(exc) else f"{exc}"
    return LedgerUnavailableError(f"the ledger cannot write ({what}): {reason}; try again later",
                                  retry_after_s=5.0 if is_full(exc) else 1.0)


class Room:
    """The full-disk state and the padding kept back for settles (see the module docstring)."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.full_since: float | None = None  # monotonic time the disk was found full; None: room
        self.refusals = 0  # holds refused while full
        self._next_probe = 0.0

    def now_full(self, what: str) -> None:
        """A write found the disk full: refuse new holds until a probe finds room again."""
        if self.full_since is None:
            self.full_since = time.monotonic()
            self._next_probe = self.full_since + PROBE_S
            log.warning("ledger: the disk is full (%s): refusing new holds until space returns", what)

    def check(self, conn: sqlite3.Connection, *, probe: bool) -> None:
        """Raise LedgerUnavailableError while the disk is full; ``probe``: may try for room now."""
        if self.full_since is None:
            return
        now = time.monotonic()
        if probe and now >= self._next_probe:
            self._next_probe = now + PROBE_S
            if self.refill(conn):
                waited = now - self.full_since
                log.warning("ledger: disk space returned after %.0f s: taking holds again", waited)
                self.full_since = None
                return
        self.refusals += 1
        raise LedgerUnavailableError(
            "the ledger's disk is full: no new requests are taken until space returns", retry_after_s=5.0)

    def refill(self, conn: sqlite3.Connection) -> bool:
        """Write the padding back up to ``pages`` rows in one transaction; False while the disk is full."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS spare (id INTEGER PRIMARY KEY, pad BLOB NOT NULL)")
            (have,) = conn.execute("SELECT COUNT(*) FROM spare").fetchone()
            conn.executemany("INSERT INTO spare (pad) VALUES (zeroblob(?))",
                             [(_PAD_BYTES,)] * max(0, self.pages - have))
            conn.execute("COMMIT")
            return True
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_transient(exc):
                return False
            raise

    def give_back(self, conn: sqlite3.Connection) -> int:
        """Delete the padding (its pages go to the free list) and truncate the WAL; rows freed."""
        freed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            freed = conn.execute("DELETE FROM spare").rowcount
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("ledger: could not release the spare room: %s", exc)
        checkpoint(conn)
        return max(freed, 0)


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL back into the database and truncate it (frees its disk space); best effort."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError as exc:
        log.warning("ledger: WAL checkpoint failed: %s", exc)
