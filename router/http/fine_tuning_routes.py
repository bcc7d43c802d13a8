"""The HTTP handlers of ``/v1/fine_tuning/jobs``: a virtual key's origin, regions and budget bind its jobs."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from suanli.router.core.keys import CLIENT_KEY
from suanli.router.errors import BadRequestError
from suanli.router.workloads.files import owner_of
from suanli.router.workloads.fine_tuning.tuner import FineTuner

__all__ = ["fine_tuning_routes"]


def fine_tuning_routes(app: web.Application, tuner: Callable[[web.Request], FineTuner]) -> None:
    """Register ``/v1/fine_tuning/jobs`` on ``app``; ``tuner(request)`` finds the FineTuner."""

    async def create(request: web.Request) -> web.Response:
        key = request.get(CLIENT_KEY)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise BadRequestError(
                f"the body is not valid JSON: {exc}", param=None, code="invalid_json"
            ) from exc
        job = await tuner(request).create(
            body,
            origin=request.headers.get("X-Suanli-Origin") or (key.origin if key else None),
            deadline_s=request.headers.get("X-Suanli-Deadline-S") or None,
            key_id=key.key_id if key else None,
            allowed_regions=key.allowed_regions if key else None,
            key=key,
        )
        return web.json_response(job)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response(tuner(request).listing(dict(request.query), owner_of(request)))

    async def retrieve(request: web.Request) -> web.Response:
        return web.json_response(tuner(request).job_object(request.match_info["job_id"], owner_of(request)))

    async def cancel(request: web.Request) -> web.Response:
        return web.json_response(await tuner(request).cancel(request.match_info["job_id"], owner_of(request)))

    async def events(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        return web.json_response(tuner(request).events(job_id, dict(request.query), owner_of(request)))

    app.router.add_post("/v1/fine_tuning/jobs", create)
    app.router.add_get("/v1/fine_tuning/jobs", listing)
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}", retrieve)
    app.router.add_post("/v1/fine_tuning/jobs/{job_id}/cancel", cancel)
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}/events", events)
