"""``GET /v1/requests/{id}``: one request's settled record, to the key that made it or the master key."""

from __future__ import annotations

import orjson
from aiohttp import web

from suanli.router.core.cost import request_record
from suanli.router.core.keys import CLIENT_KEY
from suanli.router.core.router import Router
from suanli.router.errors import NotFoundError

__all__ = ["add_request_routes"]

_ROUTER = web.AppKey("requests_router", Router)


def add_request_routes(app: web.Application, router: Router) -> None:
    """Register the settled-request lookup on ``app``."""
    app[_ROUTER] = router
    app.router.add_get("/v1/requests/{request_id}", _request)


async def _request(request: web.Request) -> web.Response:
    request_id = request.match_info["request_id"]
    router = request.app[_ROUTER]
    row = await router.accounts.ledger.port.usage_of_request(request_id)
    key = request.get(CLIENT_KEY)  # None: the master key, or keys are not checked at all
    if row is None or (key is not None and row.key_id != key.key_id):
        # Another key's request reads as absent: its id says nothing about who made it.
        raise NotFoundError(f"no settled request {request_id!r} for this key", param="request_id")
    return web.Response(body=orjson.dumps(request_record(row)), content_type="application/json")
