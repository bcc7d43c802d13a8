"""Async requests: batch work sent with ``X-Suanli-Async: true``, held and answered later.

A request of the batch class (``suanli.deadline_s``, ``X-Suanli-Class: batch`` or
``service_tier: "flex"``) sent with ``X-Suanli-Async: true`` is checked at once (bad input is
a 400 then, as for any request), answered ``202`` with its id, and run at the start the
batch scheduler finds cheapest before its deadline (``deadline_s``, else the class's):
the same deferral scheduler and capacity book as ``/v1/batches``. Its answer is fetched
with ``GET /v1/requests/{id}`` by the key that made it (or the master key).

Nothing is held on the ledger while a request waits: the hold is taken when it runs, as for
any request, so a request lost with its process (queued requests live in memory) costs
nothing; it reads as unknown (404) afterwards and the client sends it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from suanli.optimizer import CapacityBook
from suanli.router.core.classify import classify
from suanli.router.core.clocks import clock_speed
from suanli.router.core.context import RequestContext
from suanli.router.core.controls import narrowed, parse_controls, with_deadline
from suanli.router.core.keys import within_regions
from suanli.router.core.results import Completion
from suanli.router.core.router import Router, new_request_id
from suanli.router.core.validate import validate_body
from suanli.router.errors import ApiError, BadRequestError
from suanli.router.workloads.batches.plan import LineAsk, latest_start_s, place_jobs

__all__ = ["Deferred", "DeferredRequests"]

log = logging.getLogger("suanli.deferred")

_KEEP = 10_000  # finished requests kept for GET /v1/requests/{id}, oldest out


@dataclass(slots=True)
class Deferred:
    """One async request: its state and, once it ran, its answer or its error."""

    id: str
    key_id: str | None
    status: str  # queued | in_progress | completed | failed
    created_s: float
    not_before_s: float
    deadline_s: float
    response: dict | None = None
    error: dict | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "suanli.request",
            "status": self.status,
            "created": int(self.created_s),
            "not_before": datetime.fromtimestamp(self.not_before_s, UTC).isoformat(),
            "deadline": datetime.fromtimestamp(self.deadline_s, UTC).isoformat(),
        }
        if self.response is not None:
            out["response"] = self.response
        if self.error is not None:
            out["error"] = self.error
        return out


class DeferredRequests:
    """The app's async requests: placed by the batch scheduler, run in the background."""

    def __init__(self, router: Router, book: CapacityBook | None = None) -> None:
        self.router = router
        self.book = book or CapacityBook(router.config)  # the batches' book when the app has one
        self.requests: OrderedDict[str, Deferred] = OrderedDict()  # id -> request, oldest first

    def submit(self, endpoint: str, body: Any, ctx: RequestContext) -> Deferred:
        """Check ``body`` as the request path would, place it, start its wait; 400 if it cannot wait."""
        router = self.router
        config = router.config
        body = validate_body(endpoint, body)
        if body.get("stream"):
            raise BadRequestError("an async request cannot be streamed", param="stream")
        controls = parse_controls(config, body.get("suanli"))
        if controls.deadline_s is not None:
            ctx = with_deadline(ctx)
        names = frozenset(config.model_names())
        ask = narrowed(classify(config, endpoint, body, ctx, model_names=names), controls)
        if ask.work_class != "batch":
            raise BadRequestError(
                "X-Suanli-Async is for batch work: send suanli.deadline_s or X-Suanli-Class: batch",
                param="X-Suanli-Async",
            )
        now_s = router.clock().timestamp()
        deadline_s = controls.deadline_s or config.classes.batch.deadline_s
        latest = latest_start_s(now_s, deadline_s)
        line = LineAsk(0, ask.model, ask.input_tokens, ask.output_tokens, now_s, latest)
        slot = place_jobs(
            within_regions(config, ask.allowed_regions),
            [line],
            work_class="batch",
            origin=ask.origin,
            now_s=now_s,
            book=self.book,
            balances=router.balances(),
            live_plan=router.planning.plan if ask.allowed_regions is None else None,
        )[0]
        request_id = ctx.request_id or new_request_id()
        start_s = max(slot.start_s, now_s)
        entry = Deferred(request_id, ctx.key_id, "queued", now_s, start_s, now_s + deadline_s)
        ctx = RequestContext(
            work_class="batch",
            origin=ctx.origin,
            key_id=ctx.key_id,
            request_id=request_id,
            allowed_regions=ctx.allowed_regions,
            default_class=ctx.default_class,
            key=ctx.key,
        )
        run = self._run(entry, endpoint, body, ctx)
        entry.task = asyncio.create_task(run, name=f"suanli-async-{request_id}")
        self.requests[request_id] = entry
        while len(self.requests) > _KEEP:
            oldest = next(iter(self.requests.values()))
            if oldest.status in ("queued", "in_progress"):
                break
            self.requests.popitem(last=False)
        return entry

    async def _run(self, entry: Deferred, endpoint: str, body: dict, ctx: RequestContext) -> None:
        speed = clock_speed(self.router.clock) or 1.0
        wait_s = (entry.not_before_s - self.router.clock().timestamp()) / speed
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        entry.status = "in_progress"
        try:
            result = await self.router.handle(endpoint, body, ctx)
        except ApiError as exc:
            entry.status = "failed"
            entry.error = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
            return
        except Exception:  # noqa: BLE001 - the answer of a background request must say it failed
            log.exception("async request %s failed", entry.id)
            entry.status = "failed"
            entry.error = {"message": "internal error; see the server log", "type": "server_error",
                           "param": None, "code": "internal_error"}
            return
        if isinstance(result, Completion):  # always: streams are refused at submit
            entry.response = result.json()
        entry.status = "completed"

    def get(self, request_id: str) -> Deferred | None:
        return self.requests.get(request_id)

    async def stop(self) -> None:
        """Cancel the requests still waiting (nothing is held for them)."""
        tasks = [e.task for e in self.requests.values() if e.task is not None and not e.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
