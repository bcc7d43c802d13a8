"""Alerts over HTTP (master key), and the alerter's life with the app.

GET  /admin/alerts         the alerts firing now and the recent ones with their delivery outcome
POST /admin/alerts/check   check the conditions now (the background check runs every alerts.check_s)
"""

from __future__ import annotations

import orjson
from aiohttp import web

from suanli.router.core.router import Router
from suanli.router.status.alerts import Alerter, budget_alerts
from suanli.router.status.board import StatusBoard

__all__ = ["ALERTER", "add_alert_routes"]

ALERTER = web.AppKey("alerter", Alerter)


def add_alert_routes(app: web.Application, router: Router, board: StatusBoard) -> Alerter:
    """Run an Alerter over the status board's conditions plus the keys' budgets."""
    accounts = router.accounts

    async def conditions() -> list[dict]:
        if not accounts.is_open:
            return []
        board.budget_alerts = await budget_alerts(router.config, accounts.ledger.port, router.clock())
        return (await board.snapshot())["alerts"]

    leads = lambda: accounts.replica is None or accounts.replica.is_leader  # noqa: E731
    alerter = Alerter(router.config, conditions, clock=router.clock, leads=leads)
    board.alerter = alerter
    app[ALERTER] = alerter

    async def lifecycle(app: web.Application):
        alerter.start()
        yield
        await alerter.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/admin/alerts", _report)
    app.router.add_post("/admin/alerts/check", _check)
    return alerter


def _json(value: object) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


async def _report(request: web.Request) -> web.Response:
    return _json(request.app[ALERTER].report())


async def _check(request: web.Request) -> web.Response:
    alerter = request.app[ALERTER]
    raised = await alerter.check()
    return _json({"raised": raised, **alerter.report()})
