"""``GET /v1/requests/{id}``: one request's settled record, to the key that made it or the master key;
and async requests (``X-Suanli-Async: true``): queued, then answered there."""

from __future__ import annotations

import orjson
from aiohttp import web

from suanli.router.core.context import RequestContext
from suanli.router.core.cost import request_record
from suanli.router.core.keys import CLIENT_KEY
from suanli.router.core.router import Router
from suanli.router.errors import NotFoundError
from suanli.router.http.workloads import WORKLOADS
from suanli.router.workloads.deferred import DeferredRequests

__all__ = ["DEFERRED", "add_request_routes", "submit_async", "wants_async"]

_ROUTER = web.AppKey("requests_router", Router)
DEFERRED = web.AppKey("deferred", DeferredRequests)


def add_request_routes(app: web.Application, router: Router) -> None:
    """Register the request lookup on ``app``, and run its async requests (after the workloads start)."""
    app[_ROUTER] = router
    deferred = app[DEFERRED] = DeferredRequests(router)

    async def lifecycle(app: web.Application):
        workloads = app.get(WORKLOADS)
        if workloads is not None and workloads.batches is not None:
            deferred.book = workloads.batches.book  # one capacity book with /v1/batches
        yield
        await deferred.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v1/requests/{request_id}", _request)


def wants_async(request: web.Request) -> bool:
    """``X-Suanli-Async: true`` (or 1, yes)."""
    return request.headers.get("X-Suanli-Async", "").strip().lower() in ("true", "1", "yes")


def submit_async(request: web.Request, endpoint: str, body: object, context: RequestContext) -> web.Response:
    """Queue an async request: 202 with its id and where to fetch the answer."""
    entry = request.app[DEFERRED].submit(endpoint, body, context)
    location = f"/v1/requests/{entry.id}"
    return web.Response(
        body=orjson.dumps(entry.as_dict()),
        status=202,
        content_type="application/json",
        headers={"Location": location, "X-Request-Id": entry.id},
    )


async def _request(request: web.Request) -> web.Response:
    request_id = request.match_info["request_id"]
    router = request.app[_ROUTER]
    key = request.get(CLIENT_KEY)  # None: the master key, or keys are not checked at all
    entry = request.app[DEFERRED].get(request_id)
    if entry is not None and (key is None or entry.key_id == key.key_id):
        doc = entry.as_dict()
        if entry.status == "completed":
            row = await router.accounts.ledger.port.usage_of_request(request_id)
            if row is not None:
                doc = {**request_record(row), **doc}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")
    row = await router.accounts.ledger.port.usage_of_request(request_id)
    if row is None or (key is not None and row.key_id != key.key_id):
        # Another key's request reads as absent: its id says nothing about who made it.
        raise NotFoundError(f"no settled request {request_id!r} for this key", param="request_id")
    return web.Response(body=orjson.dumps(request_record(row)), content_type="application/json")
