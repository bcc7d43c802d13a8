"""The PostgreSQL ledger's writes on the request path, with ``GroupCommit``'s calling contract.

The Router calls ``run(write, *args, always=, then=, abandon=)`` on either backend
(``sqlite/group.py``'s GroupCommit for SQLite). Here each write is its own round trip to PostgreSQL
(concurrent requests use the pool's connections in parallel, so there is nothing to batch),
shielded from the caller's cancellation: a hold or settle that reached the server finishes,
``then`` follows it, and a hold whose caller went away is ``abandon``-ed (voided) rather
than left pending until this replica stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["AsyncWrites"]

log = logging.getLogger("router.ledger")

T = TypeVar("T")


class AsyncWrites:
    """Runs async ledger writes; see the module docstring."""

    def __init__(self) -> None:
        self.writes = 0

    async def run(
        self,
        write: Callable[..., Awaitable[T]],
        *args: Any,
        always: bool = False,
        then: Callable[[T], None] | None = None,
        abandon: Callable[[T], None] | None = None,
    ) -> T:
        """``await write(*args)``, then ``then(result)``; see GroupCommit.run for the flags."""
        self.writes += 1
        task = asyncio.ensure_future(self._call(write, args, then))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done() and not always and abandon is None:
                task.cancel()
            elif abandon is not None:
                task.add_done_callback(lambda t: _abandon(t, abandon))
            raise

    @staticmethod
    async def _call(write: Callable[..., Awaitable[T]], args: tuple, then: Callable[[T], None] | None) -> T:
        value = await write(*args)
        if then is not None:
            then(value)
        return value


def _abandon(task: asyncio.Task, abandon: Callable[[Any], None]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    try:
        abandon(task.result())
    except Exception as exc:  # noqa: BLE001 - a callback: log, the sweep resolves the hold at stop
        log.warning("ledger: could not release an abandoned hold: %s", exc)
