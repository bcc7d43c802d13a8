"""A full disk on the SQLite ledger: refuse new work cleanly, keep room to settle answered work.

A full disk (or ``PRAGMA max_page_count`` reached) makes SQLite answer ``SQLITE_FULL``; a
peer holding the write lock past the busy timeout, ``SQLITE_BUSY``; a failing device,
``SQLITE_IOERR``. None of them says anything about the request, so they reach the client as
``LedgerUnavailableError`` (503 with Retry-After), never as a 500.

Money first: a request the upstream has already answered must still be recorded, so room is
kept back for settles, ``spare_pages`` pages (64 by default, 256 KiB), twice:

- on the disk: before each hold, one ``statvfs``; with less than that free, the WAL (which
  grows by a few pages a request until SQLite's checkpoint at 1000 pages, 4 MiB) is copied
  back and truncated, and if that does not free enough the ledger enters the *full* state;
- on the disk, held: a file ``PATH-spare`` of that size, deleted when the ledger enters the
  full state (and at a start on a full disk), so the settles in flight, or the start, have it;
- in the file: a ``spare`` table of padding, for a file that cannot grow though the disk has
  room (``max_page_count``, a quota). When a write finds the file full the padding is deleted,
  its pages go to SQLite's free list, and the settle is retried in that room.

In the full state new holds are refused (503) and only the settles of requests in flight
write. Every few seconds a refused reserve probes: when the disk has the room again and the
spare file and padding can be written back, holds are taken again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from suanli.router.errors import LedgerUnavailableError

__all__ = ["Room", "checkpoint", "is_full", "is_transient", "unavailable"]

log = logging.getLogger("suanli.router.ledger")

_FULL, _BUSY, _LOCKED, _IOERR = 13, 5, 6, 10
_PAD_BYTES = 3000  # one row per page of 4 KiB
_PAGE_BYTES = 4096
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
    """The full-disk state and the room kept back for settles (see the module docstring).

    ``path``: the ledger file (None: in memory); the free space of its folder is watched, and
    ``PATH-spare`` is a file of ``reserve_bytes`` that holds the disk space back.
    """

    def __init__(self, pages: int, path: str | None = None) -> None:
        self.pages = pages
        self.reserve_bytes = pages * _PAGE_BYTES  # free disk below this: no new holds
        self.full_since: float | None = None  # monotonic time the disk was found full; None: room
        self.refusals = 0  # holds refused while full
        self._folder = str(Path(path).resolve().parent) if path else None
        self._ballast = Path(f"{path}-spare") if path and pages else None
        self._next_probe = 0.0

    def now_full(self, what: str) -> None:
        """A write found the disk full: refuse new holds until a probe finds room again."""
        if self.full_since is None:
            self.full_since = time.monotonic()
            self._next_probe = self.full_since + PROBE_S
            log.warning("ledger: the disk is full (%s): refusing new holds until space returns", what)
            self.drop_ballast()  # its disk space is now the settles' to use

    def fit_wal(self, conn: sqlite3.Connection) -> None:
        """Bound the WAL by the disk: checkpoint when it reaches an eighth of the free space.

        SQLite checkpoints at 1000 pages (4 MiB) by default; on a small disk that WAL alone would
        fill it before any checkpoint, and a checkpoint needs room in the database file.
        """
        free = self._free()
        if free is None:
            return
        pages = max(16, min(1000, free // 8 // _PAGE_BYTES))
        conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
        conn.execute(f"PRAGMA journal_size_limit={pages * _PAGE_BYTES * 2}")  # truncated back after a reset

    def _free(self) -> int | None:
        if self._folder is None:
            return None
        try:
            stat = os.statvfs(self._folder)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def _room_to_refill(self) -> bool:
        """Room for the reserve and, if it was given back, for the spare file that holds it."""
        free = self._free() if self.pages else None
        if free is None:
            return True
        missing = self._ballast is not None and not self._ballast.exists()
        return free >= self.reserve_bytes * (2 if missing else 1)

    def _low(self) -> bool:
        """Whether the disk holding the ledger has less than ``reserve_bytes`` free (one statvfs)."""
        free = self._free() if self.pages else None
        return free is not None and free < self.reserve_bytes

    def check(self, conn: sqlite3.Connection, *, probe: bool) -> None:
        """Before a hold: raise LedgerUnavailableError while the disk is (nearly) full.

        The free space below ``reserve_bytes`` is kept for the settles of requests in flight. A
        low disk is first answered with a checkpoint (the WAL, often most of the ledger's space,
        copied back and truncated); ``probe``: this caller may run it (not inside a group).
        """
        low = self._low()
        if self.full_since is None and not low:
            return
        now = time.monotonic()
        if probe and (self.full_since is None or now >= self._next_probe):
            self._next_probe = now + PROBE_S
            conn.execute("PRAGMA wal_autocheckpoint=16")  # from now on keep the WAL small
            checkpoint(conn)
            if self._room_to_refill() and self.refill(conn):
                if self.full_since is not None:
                    waited = now - self.full_since
                    log.warning("ledger: disk space returned after %.0f s: taking holds again", waited)
                    self.full_since = None
                return
        if self.full_since is None:
            self.now_full("low disk")
        self.refusals += 1
        raise LedgerUnavailableError(
            "the ledger's disk is full: no new requests are taken until space returns", retry_after_s=5.0)

    def closing(self, conn: sqlite3.Connection) -> None:
        """At close: checkpoint and truncate the WAL, then hold the spare file again if there is room."""
        checkpoint(conn)
        if self._room_to_refill():
            self._fill_ballast()

    def drop_ballast(self) -> None:
        """Delete the spare file: its disk space is free for whatever must write now."""
        if self._ballast is not None:
            self._ballast.unlink(missing_ok=True)

    def _fill_ballast(self) -> bool:
        """Write ``PATH-spare`` to ``reserve_bytes`` (real blocks, not a sparse file); False: no room."""
        if self._ballast is None:
            return True
        try:
            if self._ballast.exists() and self._ballast.stat().st_size >= self.reserve_bytes:
                return True
            with self._ballast.open("wb") as out:
                out.write(b"\0" * self.reserve_bytes)
                out.flush()
                os.fsync(out.fileno())
            return True
        except OSError:
            self.drop_ballast()
            return False

    def refill(self, conn: sqlite3.Connection) -> bool:
        """Put the room back (the padding rows, the spare file); False while the disk is full."""
        if not self._fill_ballast():
            return False
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
        """Free the room: the spare file, the padding (its pages go to the free list); truncate the WAL."""
        self.drop_ballast()
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
