"""Which PostgreSQL ledger instances (replicas) are alive, told by the server, not guessed.

Every writing instance registers an owner row and takes a session-level advisory lock
``(owner space, lock_key)`` on a connection of its own. The server releases that lock the
moment the session ends: at once when the process is killed (the kernel closes its socket),
within TCP keepalive time when its machine vanishes. So "alive" is read from ``pg_locks``;
pids mean nothing across machines anyway.

A replica whose session is gone can never settle its holds, so another replica voids them
at its next sweep. One that is connected but stuck (a hung event loop keeps its lock) stops
heartbeating ``owners.seen``; its holds are voided once its silence passes ``hold_timeout_s``.
A live replica's long stream is never voided under it.
"""

from __future__ import annotations

import os
import secrets
import socket

import asyncpg

from suanli.router.ledger.postgres.schema import lock_space
from suanli.router.ledger.postgres.sql import HELD_OWNER_KEYS

__all__ = ["OwnerLock", "dead_owners"]


class OwnerLock:
    """This instance's owner row and the advisory lock, on ``session``, that proves it alive."""

    def __init__(self, session: asyncpg.Connection, schema: str) -> None:
        self.session = session
        self.space = lock_space(schema, "owner")
        self.id = secrets.token_hex(6)
        self.lock_key = 0

    async def register(self, now_s: float) -> None:
        """Take a free lock key and insert the owner row."""
        host = socket.gethostname()
        for _ in range(20):
            key = secrets.randbelow(2**31 - 2) + 1
            if not await self.session.fetchval("SELECT pg_try_advisory_lock($1, $2)", self.space, key):
                continue
            inserted = await self.session.fetchval(
                "INSERT INTO owners (id, lock_key, host, pid, opened, seen) VALUES ($1, $2, $3, $4, $5, $5)"
                " ON CONFLICT (lock_key) DO NOTHING RETURNING id",
                self.id, key, host, os.getpid(), now_s,
            )
            if inserted is not None:
                self.lock_key = key
                return
            # A dead owner's row still names this key (its holds are not resolved yet): skip it.
            await self.session.execute("SELECT pg_advisory_unlock($1, $2)", self.space, key)
        raise RuntimeError("could not find a free ledger owner lock key in 20 tries")

    async def heartbeat(self, now_s: float) -> None:
        await self.session.execute("UPDATE owners SET seen = $1 WHERE id = $2", now_s, self.id)

    async def release(self, now_s: float) -> None:
        """Mark the owner closed (its pending holds become void-able) and drop the lock."""
        await self.session.execute("UPDATE owners SET closed = $1 WHERE id = $2", now_s, self.id)
        await self.session.execute("SELECT pg_advisory_unlock($1, $2)", self.space, self.lock_key)


async def dead_owners(conn: asyncpg.Connection | asyncpg.Pool, space: int, *, now_s: float,
                      silent_s: float) -> list[str]:
    """Owners that can no longer settle: closed, session gone, or silent for ``silent_s``."""
    held = {int(r[0]) for r in await conn.fetch(HELD_OWNER_KEYS, space)}
    rows = await conn.fetch("SELECT id, lock_key, seen, closed FROM owners")
    return [
        r["id"] for r in rows
        if r["closed"] is not None or r["lock_key"] not in held or r["seen"] < now_s - silent_s
    ]
