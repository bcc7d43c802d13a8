"""Reconciliation over HTTP (master key): the platforms' balances against the ledger.

GET  /admin/reconcile                the latest check of every region with a ``balance:`` block
POST /admin/reconcile                check now, then the same
POST /admin/regions/{id}/balance     {cash_yuan, granted_yuan, tokens, baseline, note}: a figure
                                     typed by an operator (what ``suanli vouchers set-balance --url`` sends)
"""

from __future__ import annotations

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suanli.router.core.router import Router
from suanli.router.errors import BadRequestError, NotFoundError
from suanli.router.status.reconcile import Reconciler, record_manual

__all__ = ["RECONCILER", "BalanceSpec", "add_reconcile_routes"]

RECONCILER = web.AppKey("reconciler", Reconciler)


class BalanceSpec(BaseModel):
    """A manual balance figure: at least one unit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cash_yuan: float | None = Field(default=None, ge=0)
    granted_yuan: float | None = Field(default=None, ge=0)
    tokens: float | None = Field(default=None, ge=0)
    baseline: bool = False  # start counting again from this figure (after a top-up)
    note: str = Field(default="", max_length=500)

    def amounts(self) -> dict[str, float]:
        return {u: v for u, v in (("cash_yuan", self.cash_yuan), ("granted_yuan", self.granted_yuan),
                                  ("tokens", self.tokens)) if v is not None}


def add_reconcile_routes(app: web.Application, router: Router) -> Reconciler:
    """Register the reconciliation routes and run the background reconciler with the app."""
    accounts = router.accounts
    reconciler = Reconciler(
        router.config,
        lambda: accounts.ledger.port if accounts.is_open else None,
        base_url=router.base_url,
        clock=router.clock,
        leads=lambda: accounts.replica is None or accounts.replica.is_leader,
    )
    app[RECONCILER] = reconciler

    async def lifecycle(app: web.Application):
        reconciler.start()
        yield
        await reconciler.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/admin/reconcile", _report)
    app.router.add_post("/admin/reconcile", _run)
    app.router.add_post("/admin/regions/{region_id}/balance", _set_balance)
    return reconciler


def _json(value: object) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


async def _report(request: web.Request) -> web.Response:
    return _json({"object": "list", "data": request.app[RECONCILER].report()})


async def _run(request: web.Request) -> web.Response:
    reconciler = request.app[RECONCILER]
    await reconciler.run_once()
    return _json({"object": "list", "data": reconciler.report()})


async def _set_balance(request: web.Request) -> web.Response:
    reconciler = request.app[RECONCILER]
    region_id = request.match_info["region_id"]
    if reconciler.config.region(region_id) is None:
        raise NotFoundError(f"no region {region_id!r}", param="region_id")
    try:
        spec = BalanceSpec.model_validate(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise BadRequestError(f"the body must be a balance figure: {_first(exc)}", param=None) from None
    if not spec.amounts():
        raise BadRequestError("give at least one of cash_yuan, granted_yuan, tokens", param=None)
    ledger = reconciler.ledger()
    rows = await record_manual(ledger, region_id, spec.amounts(), at=reconciler.now_s(),
                               baseline=spec.baseline, note=spec.note)
    await reconciler.run_once()
    body = {"recorded": [{"unit": f.unit, "amount": f.amount, "baseline": f.baseline} for f in rows],
            "check": reconciler.checks.get(region_id).as_dict() if region_id in reconciler.checks else None}
    return web.json_response(body, status=201, dumps=lambda v: orjson.dumps(v).decode())


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
    return str(exc)
