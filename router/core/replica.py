"""What a router replica on a shared PostgreSQL ledger runs beside the request path.

Every ``period_s`` (1 s) each replica:

1. refreshes its view of the ledger (``ledger_pg_view``): every replica's holds and spend
   in the balances the chooser reads, the voucher report, the exhaustion marks;
2. appends the requests it served since the last period to ``demand_events``;
3. takes part in the leader election (``leader``). Only the leader runs its ``Replanner``
   (router/core/planning.py): it feeds the other replicas' events into that planner's forecast
   (so it plans from the merged demand) and publishes each new plan, with its voucher
   shadow prices, on the plan board. The others put the newest published plan into their
   own Replanner, where the chooser reads it, within a period of its publication. When the
   leader dies its advisory lock goes with its session; another replica takes over at its
   next period, starting its planner from the last ten minutes of everyone's events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

import asyncpg

from suanli.config import Config
from suanli.optimizer import Ask, Plan
from suanli.router.core.limits import RequestLimits
from suanli.router.core.limits_shared import apply_share
from suanli.router.core.plan_board import PlanBoard
from suanli.router.core.planning import Replanner
from suanli.router.ledger.postgres.leader import Leadership
from suanli.router.ledger.postgres.ledger import PgLedger
from suanli.router.ledger.postgres.schema import pg_url
from suanli.router.ledger.postgres.view import SharedLedgerView

__all__ = ["Replica"]

log = logging.getLogger("router.replica")

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
_TAKEOVER_S = 600.0  # a new leader's forecast starts from this much of everyone's recent events
_KEEP_S = 86400.0  # demand events older than this are deleted by the leader


class Replica:
    """One replica's background duties; see the module docstring."""

    def __init__(self, ledger: PgLedger, config: Config, available: MutableMapping[str, float],
                 planning: Replanner, *, limits: RequestLimits | None = None, period_s: float = 1.0,
                 view: SharedLedgerView | None = None) -> None:
        self.ledger = ledger
        self.config = config
        self.planning = planning
        self.id = ledger.owner_id
        self.period_s = period_s
        # The Router's book on this ledger (``open_handle`` made it), refreshed here each period.
        self.view = view if view is not None else SharedLedgerView(ledger, available)
        self.limits = limits  # when set (no shared Redis), this replica keeps 1/n of every region's limits
        self.replicas = 1  # live replicas on the ledger, this one included
        self.plan_version = 0  # of the newest plan published or picked up
        self._board = PlanBoard(ledger.pool)
        self._leadership = Leadership(pg_url(ledger.url), self.id)
        self._events: list[tuple[Any, ...]] = []  # (class, origin, model, input, output, at_s)
        self._planning_runs = False
        self._published: Plan | None = None
        self._cursor = 0  # last demand_events id fed to the planner
        self._task: asyncio.Task[None] | None = None

    def reconfigure(self, config: Config) -> None:
        """A config reload (after the picker's limits took it): this replica's 1/n of the new limits."""
        self.config = config
        if self.limits is not None and self.replicas > 1:
            apply_share(self.limits, config.regions, self.replicas)

    @classmethod
    async def start(cls, ledger: PgLedger, config: Config, available: MutableMapping[str, float],
                    planning: Replanner, **options: Any) -> Replica:
        """A running Replica: one step done (the view filled, a published plan taken), then every period."""
        replica = cls(ledger, config, available, planning, **options)
        await replica.step()
        replica._task = asyncio.create_task(replica._run())
        return replica

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    @property
    def plan(self) -> Plan | None:
        return self.planning.plan

    def served(self, ask: Ask, *, completion_tokens: float, at: datetime) -> None:
        """Note one served request for the merged demand (flushed at the next period)."""
        self._events.append((ask.work_class, ask.origin, ask.model, float(ask.input_tokens),
                             float(completion_tokens), at.timestamp()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.view.drain()
        try:
            await self._flush()
        except _DB_ERRORS as exc:
            log.warning("replica: could not flush demand at stop: %s", exc)
        await self._stand_down()
        await self._leadership.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.step()
            except _DB_ERRORS as exc:
                # A restarting database: stand down and try again next period.
                log.warning("replica step failed: %s", exc)
                self._leadership.lost()
                await self._stand_down()

    async def step(self) -> None:
        """One period's work (public so tests can drive it without waiting)."""
        await self.view.refresh()
        await self._flush()
        await self._share_limits()
        now_s = self.ledger.now().timestamp()
        if await self._leadership.step(now_s):
            await self._lead(now_s)
        else:
            await self._stand_down()
            await self._follow()

    async def _share_limits(self) -> None:
        live = await self.ledger.live_owners()
        if live != self.replicas and self.limits is not None:
            apply_share(self.limits, self.config.regions, live)
            log.info("limits: %d replicas, each takes 1/%d of every region's limits", live, live)
        self.replicas = live

    async def _flush(self) -> None:
        events, self._events = self._events, []
        if events:
            await self.ledger.pool.executemany(
                "INSERT INTO demand_events (replica, work_class, origin, model, input_tokens, output_tokens,"
                " window_s, at_s) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
                [(self.id, *e) for e in events],
            )

    async def _lead(self, now_s: float) -> None:
        if not self._planning_runs:
            # Newly leading: the planner restarts its forecast from everyone's recent events.
            self.planning.start()
            self._planning_runs = True
            self._cursor = await self.ledger.pool.fetchval("SELECT COALESCE(max(id), 0) FROM demand_events")
            rows = await self._events_since(0, now_s - _TAKEOVER_S, exclude=None)
        else:
            rows = await self._events_since(self._cursor, float("-inf"), exclude=self.id)
        for r in rows:
            self.planning.observe((r["work_class"], r["origin"], r["model"]), input_tokens=r["input_tokens"],
                                  output_tokens=r["output_tokens"], at_s=r["at_s"])
        if rows:
            self._cursor = max(self._cursor, rows[-1]["id"])
        fresh = self.planning.plan
        if fresh is not None and fresh is not self._published:
            self.plan_version = await self._board.publish(fresh, leader=self.id, now_s=now_s)
            self._published = fresh
            await self.ledger.pool.execute("DELETE FROM demand_events WHERE at_s < $1", now_s - _KEEP_S)

    async def _events_since(
        self, cursor: int, since_s: float, *, exclude: str | None
    ) -> list[asyncpg.Record]:
        return await self.ledger.pool.fetch(
            "SELECT id, work_class, origin, model, input_tokens, output_tokens, at_s FROM demand_events"
            " WHERE id > $1 AND at_s >= $2 AND replica IS DISTINCT FROM $3 ORDER BY id",
            cursor, since_s, exclude,
        )

    async def _stand_down(self) -> None:
        if self._planning_runs:
            self._planning_runs = False
            self._published = None
            await asyncio.to_thread(self.planning.stop)

    async def _follow(self) -> None:
        newer = await self._board.newest(self.plan_version)
        if newer is not None:
            self.plan_version, self.planning.plan = newer
