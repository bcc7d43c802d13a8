"""``GET /admin/status`` and ``GET /metrics``: admin endpoints behind the master key."""

from __future__ import annotations

import orjson
from aiohttp import web

from suanli.router.core.metrics import render_metrics
from suanli.router.core.router import Router
from suanli.router.status.board import StatusBoard
from suanli.router.status.exposition import accounts_metrics

__all__ = ["STATUS", "add_status_routes"]

STATUS = web.AppKey("status", StatusBoard)

_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_status_routes(app: web.Application, router: Router) -> StatusBoard:
    """Register the status document and the Prometheus endpoint on ``app``; the board."""
    board = app[STATUS] = StatusBoard(router)
    app.router.add_get("/admin/status", _status)
    app.router.add_get("/metrics", _metrics)
    return board


async def _status(request: web.Request) -> web.Response:
    doc = await request.app[STATUS].snapshot()
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    board = request.app[STATUS]
    router = board.router
    body = render_metrics(
        router.metrics, vouchers=router.voucher_report(), regions=board.region_entries(router.clock())
    )
    reconcile = board.reconciler.report() if board.reconciler is not None else []
    body += accounts_metrics(reconcile, board.alerter.counts if board.alerter is not None else {})
    return web.Response(body=body, headers={"Content-Type": _PROMETHEUS_TYPE})
