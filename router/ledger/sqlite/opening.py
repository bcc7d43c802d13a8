"""Opening a SQLite ledger file, on a disk that may be full.

A ledger that cannot start because its disk is full would leave ``suanli serve`` unable to
even refuse work cleanly. So a failed first start is tried once more after giving back the
room the last run kept (its spare file and the padding in the file, ``space.Room``), and a
start that still fails says to free disk space instead of a traceback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from suanli.router.errors import LedgerError, LedgerUnavailableError
from suanli.router.ledger.sqlite import space
from suanli.router.ledger.sqlite.schema import SqliteOptions, connect

__all__ = ["open_with_room"]

L = TypeVar("L")


def open_with_room(path: str, options: SqliteOptions, room: space.Room,
                   build: Callable[[sqlite3.Connection], L]) -> L:
    """``build`` the ledger on a fresh connection to ``path``; on a full disk, again after
    giving back the spare room. Raises LedgerError when even that fails."""
    opened: list[sqlite3.Connection] = []

    def start(give_back: bool) -> L:
        if give_back:  # a full disk at start: the spare file the last run kept makes room
            room.drop_ballast()
        conn = connect(path, synchronous=options.synchronous, max_page_count=options.max_page_count)
        opened.append(conn)
        if give_back:  # and the padding in the file
            room.give_back(conn)
        room.fit_wal(conn)
        return build(conn)

    try:
        try:
            ledger = start(False)
        except (sqlite3.OperationalError, LedgerUnavailableError):
            while opened:
                opened.pop().close()
            ledger = start(True)
        conn = opened[-1]
    except (sqlite3.OperationalError, LedgerUnavailableError) as exc:
        for c in opened:
            c.close()
        raise LedgerError(f"cannot open the ledger {path!r}: {exc} (free some disk space and start again)"
                          ) from exc
    if not room.refill(conn):
        room.now_full("start")
    return ledger
