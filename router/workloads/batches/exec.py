"""The batch executor: validate, plan, run each line at its planned start, write the result files.

Status lifecycle (OpenAI's): validating -> in_progress -> finalizing -> completed, or
failed (a bad input), expired (the window closed first), cancelling -> cancelled.

Exactly once per ``custom_id``: every line is a row of ``wl_batch_lines`` that goes
pending -> running -> done, and its answer is stored in the same transaction that marks
it done. After a restart a line found ``running`` is checked against the ledger: with a
settled usage row for its request id it ran (and was charged) but the answer was lost
with the process, so it is answered with a ``response_lost`` error rather than run and
charged twice; without one it goes back to pending and runs.

The stages live in ``batch_intake`` (validating), ``batch_lines`` (a line's run) and
``batch_results`` (finalizing); this module drives them and owns the batch's task.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from suanli.optimizer import CapacityBook
from suanli.router.core.clocks import clock_speed
from suanli.router.core.keys import KeyPolicy, load_policy
from suanli.router.core.router import Router
from suanli.router.workloads.batches.intake import recover_lines, validate_and_plan
from suanli.router.workloads.batches.lines import Line, run_line, take_due
from suanli.router.workloads.batches.platform import PlatformBatches
from suanli.router.workloads.batches.results import close_pending, write_results
from suanli.router.workloads.batches.table import BatchTable
from suanli.router.workloads.db import WorkloadDB
from suanli.router.workloads.files import FileStore

__all__ = ["BatchRunner"]

log = logging.getLogger("suanli.batch")

_MAX_IN_FLIGHT = 64  # lines of one batch running at once
_DRAIN_S = 15.0  # how long a stop waits for the lines already running
_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


class BatchRunner:
    """Runs every active batch in the background of the app; survives restarts through the DB."""

    def __init__(self, router: Router, db: WorkloadDB, files: FileStore, *, poll_s: float = 0.5) -> None:
        self.router = router
        self.db = db
        self.files = files
        self.poll_s = poll_s
        self.book = CapacityBook(router.config)
        self.table = BatchTable(db, self.now_s)
        self.platform = PlatformBatches(router, self.table)  # lines a platform's batch API runs
        self._tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self._keys: dict[str, KeyPolicy] = {}  # batch id -> the virtual key that created it (this process)
        self._semaphores = {
            r.id: asyncio.Semaphore(r.limits.concurrency or 16) for r in router.config.regions
        }

    def now_s(self) -> float:
        return self.router.clock().timestamp()

    async def start(self) -> None:
        """Resume every batch left active by a previous process."""
        for row in self.db.rows("SELECT id FROM wl_batches WHERE status IN (?, ?, ?, ?)", _ACTIVE):
            await recover_lines(self.router, self.table, self.book, row["id"])
            self.submit(row["id"])

    async def stop(self) -> None:
        """Take no new line, let the lines running finish (up to ``_DRAIN_S``), then stop.

        Cancelling a line mid-request could cut it after the ledger settled it and before its
        answer is kept; draining first keeps that to a crash's window.
        """
        self._stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=_DRAIN_S)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.platform.close()

    def submit(self, batch_id: str, key: KeyPolicy | None = None) -> None:
        """Start (or resume) the task of one batch; ``key``'s budget and regions apply to its lines.

        After a restart only the key id is known (kept with the batch), not its policy.
        """
        if key is not None:
            self._keys[batch_id] = key
        if batch_id in self._tasks and not self._tasks[batch_id].done():
            return
        task = asyncio.get_running_loop().create_task(self._run(batch_id), name=f"batch {batch_id}")
        self._tasks[batch_id] = task

    def cancel(self, batch_id: str) -> None:
        """Mark a batch cancelling; its task notices at its next step."""
        self.table.set_status(batch_id, "cancelling", "cancelling_at")

    async def _run(self, batch_id: str) -> None:
        try:
            status = self.table.status(batch_id)
            if status == "validating":
                await validate_and_plan(
                    self.router, self.table, self.files, self.book, batch_id, self._keys.get(batch_id)
                )
            if self.table.status(batch_id) in ("in_progress", "cancelling"):
                await self._execute(batch_id)
            if self.table.status(batch_id) == "finalizing":
                write_results(self.table, self.files, batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a batch's failure must not take the app down; it is logged
            log.exception("batch %s failed", batch_id)
            self.table.set_status(batch_id, "failed", "failed_at")

    # -- in_progress: run lines when their start comes ------------------------------------

    async def _execute(self, batch_id: str) -> None:
        batch = self.table.batch(batch_id)
        endpoint = batch["endpoint"].removeprefix("/v1/")
        in_flight: set[asyncio.Task] = set()
        try:
            while True:
                status = self.table.status(batch_id)
                now_s = self.now_s()
                if status == "cancelling" or now_s >= batch["expires_at"] or self._stopping:
                    break
                waiting = self.platform.waiting(batch_id)
                if waiting:
                    await self.platform.advance(batch, self._keys.get(batch_id))
                room = _MAX_IN_FLIGHT - len(in_flight)
                due = take_due(self.table, batch_id, now_s, room) if room > 0 else []
                for line in due:
                    in_flight.add(asyncio.create_task(self._run_line(batch, endpoint, line)))
                if not in_flight and not due:
                    upcoming = self.db.row(
                        "SELECT MIN(start_s) AS s FROM wl_batch_lines"
                        " WHERE batch_id = ? AND state = 'pending'",
                        (batch_id,),
                    )
                    if upcoming is None or upcoming["s"] is None:
                        if not waiting:
                            break
                        wait_s = self._real_wait(self.poll_s)  # the platforms' batches run meanwhile
                    else:
                        wait_s = self._real_wait(upcoming["s"] - now_s)
                        if waiting:
                            wait_s = min(wait_s, self.poll_s)
                else:
                    wait_s = self._real_wait(self.poll_s) if room > len(due) else self.poll_s
                if in_flight:
                    done, in_flight = await asyncio.wait(
                        in_flight, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    in_flight = set(in_flight)
                else:
                    await asyncio.sleep(wait_s)
            if in_flight:
                await asyncio.gather(*in_flight)
        except BaseException:
            for task in in_flight:
                task.cancel()
            raise
        if not self._stopping:
            close_pending(self.table, batch_id)
            self.router.accounts.release_promises(f"{batch_id}-")

    def _real_wait(self, virtual_s: float) -> float:
        speed = clock_speed(self.router.clock)
        if speed <= 0:
            return min(self.poll_s, 0.02)
        return min(max(virtual_s / speed, 0.0), self.poll_s)

    async def _run_line(self, batch: dict, endpoint: str, line: Line) -> None:
        # After a restart the policy is read back from the stored key, so it still binds.
        key = self._keys.get(line.batch_id) or await load_policy(
            self.router.accounts.ledger.port, self.router.config, batch["key_id"]
        )
        semaphore = self._semaphores.get(line.region or "", None)
        await run_line(self.router, self.table, batch, endpoint, line, key=key, semaphore=semaphore)
