"""``GET /admin/whatif``: the default what-if set on the served traffic, for the monitor.

Query: ``since`` and ``until`` as ``suanli whatif`` reads them (default: the last 24 h on the
router's clock). The answer is ``suanli whatif --json``'s object. The replays run in a worker
thread, one at a time; an answer is kept for ``_KEEP_S`` so a monitor polling it costs one
replay set a minute, not one per poll. Behind the master key, as every ``/admin`` path.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from suanli.router.core.router import Router
from suanli.router.errors import BadRequestError
from suanli.router.ops.scenarios import default_scenarios
from suanli.router.ops.spend_report import parse_moment
from suanli.router.ops.team import MONTH, team_day
from suanli.router.ops.trace_export import read_starts, read_windows
from suanli.router.ops.whatif import run_whatif

__all__ = ["add_whatif_route"]

_KEEP_S = 60.0
_FAR = datetime(9999, 1, 1, tzinfo=UTC)


class _WhatIfRoute:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.lock = asyncio.Lock()
        self.kept: dict[tuple[str, str], tuple[float, bytes]] = {}  # (since, until) query -> (when, body)

    async def handle(self, request: web.Request) -> web.Response:
        router = self.router
        query = (request.query.get("since", ""), request.query.get("until", ""))
        tz = ZoneInfo(router.config.timezone)
        now = router.clock()
        moments: dict[str, datetime] = {}
        for name, text in zip(("since", "until"), query, strict=True):
            if text:
                try:
                    moments[name] = parse_moment(text, now=now, tz=tz)
                except ValueError as exc:
                    raise BadRequestError(str(exc), param=name) from None
        until = moments.get("until", now)
        since = moments.get("since", until - timedelta(days=1))
        if since >= until:
            raise BadRequestError(
                f"since {since.isoformat()} is not before until {until.isoformat()}", param="since"
            )
        async with self.lock:
            kept = self.kept.get(query)
            if kept is not None and time.monotonic() - kept[0] < _KEEP_S:
                return web.Response(body=kept[1], content_type="application/json")
            body = await self._run(since, until)
            self.kept = {query: (time.monotonic(), body)}
        return web.Response(body=body, content_type="application/json")

    async def _run(self, since: datetime, until: datetime) -> bytes:
        router = self.router
        port = router.accounts.ledger.port
        rows = await port.usage(since=since, until=_FAR)
        month = await port.usage(since=until - MONTH, until=until)
        balances = {status.id: status.balance for status in router.accounts.vouchers()}
        # keys of a build that gives them a priority (critical, normal, sheddable)
        priorities = {k.id: str(p) for k in await port.keys() if (p := getattr(k, "priority", None))}
        config = router.config

        def replay() -> dict:
            team = team_day(
                config,
                since=since,
                until=until,
                rows=rows,
                balances_now=balances,
                month_cash_yuan=math.fsum(r.cash_yuan for r in month),
                windows=read_windows(config.ledger.url),
                starts=read_starts(config.ledger.url, since=since),
            )
            out: dict = {"since": since.isoformat(), "until": until.isoformat()}
            if team.export.requests == 0:
                return out | {"requests": 0, "scenarios": []}
            scenarios = default_scenarios(team.config, team.traffic)
            result = run_whatif(
                team.config,
                team.export.lines,
                team.export.keys,
                scenarios,
                ledger_cash_yuan=team.export.cash_yuan,
                priorities=priorities,
                ledger_cash=team.export.ledger_cash,
            )
            return out | result.as_json()

        return orjson.dumps(await asyncio.to_thread(replay))


def add_whatif_route(app: web.Application, router: Router) -> None:
    """Register ``GET /admin/whatif`` on ``app`` (``create_app(..., routes=[add_whatif_route])``)."""
    app.router.add_get("/admin/whatif", _WhatIfRoute(router).handle)
