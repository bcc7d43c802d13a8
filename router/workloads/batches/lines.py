"""Running one line of a batch: at its planned region, else anywhere; its answer kept exactly once."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

import orjson

from suanli.router.core.context import RequestContext
from suanli.router.core.keys import KeyPolicy
from suanli.router.core.results import Completion
from suanli.router.core.router import Router
from suanli.router.errors import ApiError, ShedError
from suanli.router.workloads.batches.plan import latest_start_s
from suanli.router.workloads.batches.table import BatchTable, error_entry

__all__ = ["Line", "run_line", "take_due"]

log = logging.getLogger("suanli.batch")

_RETRY_UNPINNED = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Line:
    batch_id: str
    line_no: int
    custom_id: str
    body: dict
    region: str | None


def take_due(table: BatchTable, batch_id: str, now_s: float, room: int) -> list[Line]:
    """Mark up to ``room`` lines whose start has come running, in one transaction, and return them."""
    with table.db.transaction() as c:
        rows = c.execute(
            "SELECT line_no, custom_id, body, region FROM wl_batch_lines WHERE batch_id = ?"
            " AND state = 'pending' AND start_s <= ? ORDER BY start_s, line_no LIMIT ?",
            (batch_id, now_s, room),
        ).fetchall()
        c.executemany(
            "UPDATE wl_batch_lines SET state = 'running' WHERE batch_id = ? AND line_no = ?",
            [(batch_id, r[0]) for r in rows],
        )
    return [Line(batch_id, r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]


async def run_line(
    router: Router,
    table: BatchTable,
    batch: dict,
    endpoint: str,
    line: Line,
    *,
    key: KeyPolicy | None,
    semaphore: asyncio.Semaphore | None,
) -> None:
    """Send one line through the Router under ``key``'s policy and store its answer or error.

    ``semaphore`` bounds the lines running at once at the line's planned region.
    """
    request_id = f"{line.batch_id}-{line.line_no}"
    ctx = RequestContext(
        work_class="batch",
        origin=batch["origin"],
        request_id=request_id,
        key_id=batch["key_id"],
        allowed_regions=key.allowed_regions if key else None,
        key=key,
        booked=True,
        input_tokens=table.prompt_tokens.get((line.batch_id, line.line_no)),  # counted once, at planning
    )
    body = line.body
    started = time.perf_counter()
    router.accounts.release_promise(request_id)  # its voucher units are its own to draw now
    try:
        # A line planned outside the key's regions is routed afresh, within them.
        allowed = key is None or key.allowed_regions is None or line.region in key.allowed_regions
        if line.region and allowed and "/" not in body["model"]:
            try:
                async with semaphore or _NULL:
                    result = await router.handle(
                        endpoint, {**body, "model": f"{line.region}/{body['model']}"}, ctx
                    )
            except ApiError as exc:
                if exc.status not in _RETRY_UNPINNED or isinstance(exc, ShedError):
                    raise
                if exc.status == 429 and _requeue(table, batch, line, exc.retry_after_s):
                    return
                # The planned region is down (or throttling to the end): any region, now.
                log.info(
                    "batch line %s: %s failed (%s), trying any region",
                    request_id,
                    line.region,
                    exc.status,
                )
                result = await router.handle(endpoint, body, ctx)
        else:
            result = await router.handle(endpoint, body, ctx)
    except ApiError as exc:
        if isinstance(exc, ShedError) and _requeue(table, batch, line, exc.retry_after_s):
            return  # supply is short and the key's work is sheddable: the line waits (core/shedding.py)
        table.store(line.batch_id, line.line_no, error_entry(line.custom_id, request_id, exc), None)
        return
    if not isinstance(result, Completion):  # stream was refused at validation
        raise RuntimeError("a batch line was answered as a stream")
    routing = result.routing
    entry = {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": line.custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": result.json()},
        "error": None,
    }
    log.debug("batch line %s ran at %s in %.3f s", request_id, routing.region, time.perf_counter() - started)
    table.store(line.batch_id, line.line_no, entry, routing)


def _requeue(table: BatchTable, batch: dict, line: Line, retry_after_s: float | None) -> bool:
    """A throttled line waits at its cheap region rather than moving now; False when time is short."""
    retry_s = table.now_s() + max(retry_after_s or 1.0, 1.0)
    window_s = batch["expires_at"] - batch["created_at"]
    if retry_s > latest_start_s(batch["created_at"], window_s):
        return False
    table.db.execute(
        "UPDATE wl_batch_lines SET state = 'pending', start_s = ? WHERE batch_id = ? AND line_no = ?",
        (retry_s, line.batch_id, line.line_no),
    )
    return True


class _NullLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NULL = _NullLock()
