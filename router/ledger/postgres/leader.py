"""Leader election among replicas with a PostgreSQL advisory lock.

The replica whose session holds the session-level advisory lock ``(leader space, 0)`` is
the leader. The server frees the lock the moment that session ends (the process died, its
connection broke), so the next replica that tries takes over: no lease to tune, no clock to
trust. A replica that loses its session while leading learns it on its next step.
"""

from __future__ import annotations

import logging

import asyncpg

from suanli.router.ledger.postgres.schema import PgUrl, connect, lock_space

__all__ = ["Leadership"]

log = logging.getLogger("router.leader")


class Leadership:
    """One replica's side of the election, on a connection of its own."""

    def __init__(self, url: PgUrl, replica_id: str) -> None:
        self._url = url
        self._space = lock_space(url.schema, "leader")
        self.replica_id = replica_id
        self.is_leader = False
        self._session: asyncpg.Connection | None = None

    async def step(self, now_s: float) -> bool:
        """Try to lead (or check we still do); whether this replica leads now."""
        if self._session is None or self._session.is_closed():
            if self.is_leader:
                log.warning("planner: lost the leader session; standing down")
            self.is_leader = False
            self._session = await connect(self._url)
        if self.is_leader:
            await self._session.fetchval("SELECT 1")  # raises if the session broke: then we lead no more
            return True
        if await self._session.fetchval("SELECT pg_try_advisory_lock($1, 0)", self._space):
            self.is_leader = True
            await self._session.execute(
                "INSERT INTO leader (replica, since) VALUES ($1, $2)"
                " ON CONFLICT (one) DO UPDATE SET replica = $1, since = $2", self.replica_id, now_s)
            log.info("planner: replica %s leads", self.replica_id)
        return self.is_leader

    def lost(self) -> None:
        """The session failed mid-step: whatever we held, the server has released."""
        self.is_leader = False
        if self._session is not None and not self._session.is_closed():
            self._session.terminate()
        self._session = None

    async def close(self) -> None:
        """Step down (the lock goes with the session)."""
        self.is_leader = False
        if self._session is not None:
            await self._session.close()
            self._session = None
