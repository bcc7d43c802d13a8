"""Group commit: ledger writes issued in one event-loop turn share one transaction.

A commit was the largest single CPU cost of a proxied request (see the profile command in
benchmarks/overhead.py): every request reserves and settles, two commits. Under concurrency
several requests reach the ledger in the same loop turn; queuing their writes and running
them at the end of the turn in one ``BEGIN IMMEDIATE ... COMMIT`` pays one commit for all.

A caller's await returns only after COMMIT, so an answer never leaves before its usage row
is in the WAL: a kill -9 still loses no settled usage. The flush runs one loop turn after the
first write is queued, so the writes of the requests woken in that turn join it too.

Writes share the transaction without savepoints (each would cost three statements): a ledger
write makes its checks before its first change, so one that refuses (a voucher ran dry) has
changed nothing and fails alone. One that raises after changing rows (the ledger's
``changes`` moved) would leave half a write in the group: the whole group is rolled back and
its writes replayed one by one, each in its own transaction, so the others still commit and
the failing one gets its own error. So is a write the file itself refused (a full disk): alone,
the ledger turns that into a 503 or, for a settle, retries it in the room kept back. The
loop is blocked only for the batch's SQL, the same
statements that ran one by one before, and a batch holds at most MAX_BATCH writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from suanli.router.ledger.sqlite.ledger import Ledger

__all__ = ["MAX_BATCH", "GroupCommit"]

T = TypeVar("T")

# Writes per transaction: bounds how long one flush holds the loop (about 20 us a write, plus
# the commit's ~50 us) while keeping most of the commit saving. At 16 clients a batch of 8
# filled up (7.6 writes a commit); 16 takes it to 14 and a request's ledger CPU from about
# 36 to 33 us (a reserve and a settle per request, timed in a loop).
MAX_BATCH = 16


class GroupCommit:
    """Runs ``ledger`` writes in batches, one commit per event-loop turn."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._queue: list[_Write] = []
        self.commits = 0
        self.writes = 0

    async def run(
        self,
        write: Callable[..., T],
        *args: Any,
        always: bool = False,
        then: Callable[[T], None] | None = None,
        abandon: Callable[[T], None] | None = None,
    ) -> T:
        """``write(*args)`` in the next batch, then ``then(result)`` once it is committed.

        ``always``: run it even if the caller is cancelled while it waits (a settle: the
        upstream already did the work); otherwise a cancelled caller's write is skipped. ``then``
        runs right after the commit whether or not the caller is still there, so in-memory
        books follow the ledger. ``abandon(result)`` runs if the caller is cancelled after the
        write committed but before it could take the result (a hold nobody would release).
        """
        loop = asyncio.get_running_loop()
        item = _Write(write, args, loop.create_future(), always, then)
        self._queue.append(item)
        if len(self._queue) == 1:
            loop.call_soon(loop.call_soon, self._flush)  # one more turn: more writes join
        try:
            return await item.future
        except asyncio.CancelledError:
            if abandon is not None and item.done and item.error is None:
                abandon(item.value)
            raise

    def _flush(self) -> None:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        if self._queue:
            asyncio.get_running_loop().call_soon(self._flush)  # the rest in the next turn
        batch = [item for item in batch if item.always or not item.future.cancelled()]
        if not batch:
            return
        try:
            if len(batch) == 1:
                _one_by_one(batch)
            else:
                try:
                    with self._ledger.group():
                        for item in batch:
                            before = self._ledger.changes
                            item.call()
                            if item.error is not None and (
                                self._ledger.changes != before
                                or isinstance(item.error, sqlite3.OperationalError)
                            ):
                                # Half a write, or the file itself failing (a full disk): roll the group
                                # back and run each write alone, where the ledger handles it.
                                raise _HalfWritten
                except _HalfWritten:
                    self.commits += len(batch) - 1  # the replay commits write by write
                    _one_by_one(batch)
        except Exception as exc:  # noqa: BLE001 - the commit failed: nothing of the batch is durable
            for item in batch:
                item.value, item.error = None, exc
        self.commits += 1
        self.writes += len(batch)
        for item in batch:
            item.finish()


class _HalfWritten(Exception):
    """A write of a group failed after changing rows: the group must not commit."""


def _one_by_one(batch: list[_Write]) -> None:
    for item in batch:
        item.value = item.error = None
        item.call()  # each a transaction of its own


class _Write:
    __slots__ = ("write", "args", "future", "always", "then", "value", "error", "done")

    def __init__(self, write: Callable[..., Any], args: tuple, future: asyncio.Future, always: bool,
                 then: Callable[[Any], None] | None) -> None:
        self.write, self.args, self.future, self.always, self.then = write, args, future, always, then
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = False

    def call(self) -> None:
        try:
            self.value = self.write(*self.args)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            self.error = exc

    def finish(self) -> None:
        """After the commit: the follow-up, then the caller's result."""
        self.done = True
        if self.error is None and self.then is not None:
            try:
                self.then(self.value)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
                self.error = exc
        if self.future.cancelled():
            return
        if self.error is None:
            self.future.set_result(self.value)
        else:
            self.future.set_exception(self.error)
