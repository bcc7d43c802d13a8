"""Which PostgreSQL ledger instances (replicas) are alive, told by the server, not guessed.

Every writing instance registers an owner row and takes a session-level advisory lock
``(owner space, lock_key)`` on a connection of its own. The server releases that lock the
moment the session ends: at once when the process is killed (the kernel closes its socket),
within TCP keepalive time when its machine vanishes. So "alive" is read from ``pg_locks``;
pids mean nothing across machines anyway.

A session can also end under a live process (``pg_terminate_backend``, a database restart,
a network blip). The instance notices at its next heartbeat, opens a new session and takes
the same lock key again; until then its lock is missing, so a peer counts an owner dead only
when its lock is missing *and* it has not heartbeated for ``grace_s`` (longer than a
reconnect takes). A replica that is alive never has its holds voided under it; one killed
has them voided ``grace_s`` after its last heartbeat.

One that is connected but stuck (a hung event loop keeps its lock) stops heartbeating
``owners.seen``; its holds are voided once its silence passes ``hold_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

import asyncpg

from suanli.router.ledger.postgres.faults import TRANSIENT
from suanli.router.ledger.postgres.schema import lock_space
from suanli.router.ledger.postgres.sql import HELD_OWNER_KEYS

__all__ = ["OwnerLock", "dead_owners"]

log = logging.getLogger("router.ledger")

Connect = Callable[[], Awaitable[asyncpg.Connection]]

_INSERT_OWNER = (
    "INSERT INTO owners (id, lock_key, host, pid, opened, seen) VALUES ($1, $2, $3, $4, $5, $5)"
    " ON CONFLICT (lock_key) DO NOTHING RETURNING id"
)


class OwnerLock:
    """This instance's owner row and the advisory lock, on ``session``, that proves it alive.

    ``reconnect`` opens a new session when the old one is lost (None: it is never reopened).
    """

    def __init__(self, session: asyncpg.Connection, schema: str, *, reconnect: Connect | None = None,
                 owner_id: str | None = None) -> None:
        self.session = session
        self.space = lock_space(schema, "owner")
        self.id = owner_id or secrets.token_hex(6)
        self.lock_key = 0
        self.reconnects = 0  # sessions reopened after the server or the network ended one
        self._reconnect = reconnect
        self._opened = 0.0

    async def register(self, now_s: float) -> None:
        """Take a free lock key and insert the owner row."""
        self._opened = now_s
        for _ in range(20):
            key = secrets.randbelow(2**31 - 2) + 1
            if not await self.session.fetchval("SELECT pg_try_advisory_lock($1, $2)", self.space, key):
                continue
            inserted = await self.session.fetchval(_INSERT_OWNER, self.id, key, socket.gethostname(),
                                                   os.getpid(), now_s)
            if inserted is not None:
                self.lock_key = key
                return
            # A dead owner's row still names this key (its holds are not resolved yet): skip it.
            await self.session.execute("SELECT pg_advisory_unlock($1, $2)", self.space, key)
        raise RuntimeError("could not find a free ledger owner lock key in 20 tries")

    async def heartbeat(self, now_s: float) -> None:
        """Say this owner is alive; reopen the session (and retake the lock) if it was lost."""
        if self.session.is_closed():
            await self._reopen(now_s)
        try:
            found = await self.session.fetchval("UPDATE owners SET seen = $1 WHERE id = $2 RETURNING id",
                                                now_s, self.id)
        except TRANSIENT:
            await self._reopen(now_s)
            found = await self.session.fetchval("UPDATE owners SET seen = $1 WHERE id = $2 RETURNING id",
                                                now_s, self.id)
        if found is None:
            # A peer forgot this owner (it was cut off longer than the grace): register again.
            log.warning("ledger: owner %s was presumed dead by a peer; registering again", self.id)
            await self.session.fetchval(_INSERT_OWNER, self.id, self.lock_key, socket.gethostname(),
                                        os.getpid(), now_s)

    async def _reopen(self, now_s: float) -> None:
        if self._reconnect is None:
            raise asyncpg.InterfaceError("the ledger owner session is closed")
        if not self.session.is_closed():
            self.session.terminate()
        self.session = await self._reconnect()
        self.reconnects += 1
        if not await self.session.fetchval("SELECT pg_try_advisory_lock($1, $2)", self.space, self.lock_key):
            # Someone registering took our key in the gap; the grace covers us until the next try.
            raise asyncpg.InterfaceError("the ledger owner lock key is taken; retrying at the next heartbeat")
        log.warning("ledger: owner session reopened (%d times), lock %d retaken", self.reconnects,
                    self.lock_key)

    async def release(self, now_s: float) -> None:
        """Mark the owner closed (its pending holds become void-able) and drop the lock."""
        await self.session.execute("UPDATE owners SET closed = $1 WHERE id = $2", now_s, self.id)
        await self.session.execute("SELECT pg_advisory_unlock($1, $2)", self.space, self.lock_key)


async def dead_owners(conn: asyncpg.Connection | asyncpg.Pool, space: int, *, now_s: float,
                      silent_s: float, grace_s: float = 0.0) -> list[str]:
    """Owners that can no longer settle: closed, session gone past ``grace_s``, or silent for ``silent_s``."""
    held = {int(r[0]) for r in await conn.fetch(HELD_OWNER_KEYS, space)}
    rows = await conn.fetch("SELECT id, lock_key, seen, closed FROM owners")
    return [
        r["id"] for r in rows
        if r["closed"] is not None
        or (r["lock_key"] not in held and r["seen"] < now_s - grace_s)
        or r["seen"] < now_s - silent_s
    ]
