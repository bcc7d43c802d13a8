"""``/v1/batches``: create, retrieve, list, cancel, as in the OpenAI API; ``BatchRunner`` runs them.

``completion_window`` is ``24h`` in OpenAI; suanli also takes any whole number of hours
from 1 to 168 (``48h``): the longer the window, the more of it can wait for cheap hours.
The batch object carries one extra key, ``suanli``: where its lines ran and what they cost.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import orjson
from aiohttp import web

from suanli.router.core.keys import CLIENT_KEY, KeyPolicy
from suanli.router.core.validate import check_depth
from suanli.router.errors import BadRequestError
from suanli.router.workloads.batches.exec import BatchRunner
from suanli.router.workloads.files import BATCH_URLS, FileStore, not_found, owned, owner_of, page

__all__ = ["batch_object", "batch_routes", "create_batch"]

_WINDOW = re.compile(r"^([1-9]\d{0,2})h$")
_MAX_WINDOW_H = 168
_TIMES = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def create_batch(
    runner: BatchRunner, files: FileStore, body: object, *, origin: str | None, key: KeyPolicy | None = None
) -> dict:
    """Check a create body, record the batch as validating and start it; the batch object."""
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", param=None)
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise BadRequestError("missing required parameter: 'input_file_id'", param="input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in BATCH_URLS:
        raise BadRequestError(f"endpoint must be one of {', '.join(BATCH_URLS)}", param="endpoint")
    window = body.get("completion_window")
    match = _WINDOW.match(window) if isinstance(window, str) else None
    if match is None or int(match.group(1)) > _MAX_WINDOW_H:
        raise BadRequestError(
            "completion_window must be 24h (or another whole number of hours up to 168h)",
            param="completion_window",
        )
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise BadRequestError("metadata must be an object of string values", param="metadata")
    origin = origin or runner.router.config.origin
    if origin not in ("east", "west"):
        raise BadRequestError(f"unknown origin {origin!r}: use east or west", param="X-Suanli-Origin")
    try:
        source = files.get(file_id, key.key_id if key else None)  # a key batches only its own files
    except BadRequestError:
        raise BadRequestError(
            f"no file with id {file_id!r}", param="input_file_id", code="not_found", status=404
        ) from None
    if source["purpose"] != "batch":
        raise BadRequestError(
            f"file {file_id!r} was uploaded with purpose {source['purpose']!r}, not batch",
            param="input_file_id",
        )
    batch_id = f"batch_{uuid.uuid4().hex[:24]}"
    created = int(runner.now_s())
    runner.db.execute(
        "INSERT INTO wl_batches (id, endpoint, input_file_id, completion_window, origin, key_id, status,"
        " created_at, expires_at, metadata) VALUES (?, ?, ?, ?, ?, ?, 'validating', ?, ?, ?)",
        (
            batch_id,
            endpoint,
            file_id,
            window,
            origin,
            key.key_id if key else None,
            created,
            created + int(match.group(1)) * 3600,
            orjson.dumps(metadata).decode() if metadata is not None else None,
        ),
    )
    runner.submit(batch_id, key)
    return batch_object(runner, batch_id)


def batch_object(runner: BatchRunner, batch_id: str, owner: str | None = None) -> dict:
    """The OpenAI batch object of ``batch_id`` (404 when unknown or another key's)."""
    db = runner.db
    mine, params = owned(owner)
    row = db.row(f"SELECT * FROM wl_batches WHERE id = ?{mine}", (batch_id, *params))
    if row is None:
        raise not_found("batch", batch_id, "batch_id")
    times = orjson.loads(row["times"])
    counts = (
        db.row(
            "SELECT COUNT(*) AS total, SUM(state = 'done' AND ok = 1) AS completed,"
            " SUM(state = 'done' AND ok = 0) AS failed, SUM(cash_yuan) AS cash, SUM(cost_yuan) AS cost"
            " FROM wl_batch_lines WHERE batch_id = ?",
            (batch_id,),
        )
        or {}
    )
    total = counts.get("total") or 0
    if not total and row["status"] == "validating":
        source = db.row("SELECT lines FROM wl_files WHERE id = ?", (row["input_file_id"],))
        total = source["lines"] if source else 0
    by_region = {
        r["region"]: r["n"]
        for r in db.rows(
            "SELECT ran_region AS region, COUNT(*) AS n FROM wl_batch_lines WHERE batch_id = ?"
            " AND ran_region IS NOT NULL GROUP BY ran_region ORDER BY ran_region",
            (batch_id,),
        )
    }
    return {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": _errors(row["errors"]),
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        **{name: times.get(name) for name in _TIMES},
        "request_counts": {
            "total": total,
            "completed": counts.get("completed") or 0,
            "failed": counts.get("failed") or 0,
        },
        "metadata": orjson.loads(row["metadata"]) if row["metadata"] else None,
        "suanli": {
            "origin": row["origin"],
            "by_region": by_region,
            "cash_yuan": round(counts.get("cash") or 0.0, 6),
            "cost_yuan": round(counts.get("cost") or 0.0, 6),
        },
    }


def _errors(raw: str | None) -> dict | None:
    return orjson.loads(raw) if raw else None


def cancel_batch(runner: BatchRunner, batch_id: str, owner: str | None = None) -> dict:
    """Ask a batch to stop: lines running finish, the rest are answered ``batch_cancelled``."""
    status = batch_object(runner, batch_id, owner)["status"]
    if status in ("validating", "in_progress"):
        runner.cancel(batch_id)
    elif status not in ("cancelling", "cancelled"):
        raise BadRequestError(
            f"a batch that is {status} cannot be cancelled", param="batch_id", code="batch_not_cancellable"
        )
    return batch_object(runner, batch_id)


def list_batches(runner: BatchRunner, query: dict[str, str], owner: str | None = None) -> dict:
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequestError("limit must be an integer between 1 and 100", param="limit")
    mine, params = owned(owner)
    sql = f"SELECT id FROM wl_batches WHERE 1 = 1{mine} ORDER BY created_at DESC, rowid DESC"
    ids = [r["id"] for r in runner.db.rows(sql, params)]
    after = query.get("after")
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    limit = int(raw)
    return page([batch_object(runner, i) for i in ids[: limit + 1]], None, limit)


def batch_routes(app: web.Application, parts: Callable[[web.Request], tuple[BatchRunner, FileStore]]) -> None:
    """Register ``/v1/batches`` on ``app``; ``parts(request)`` finds the runner and file store."""

    async def create(request: web.Request) -> web.Response:
        runner, files = parts(request)
        body = await _json(request)
        key = request.get(CLIENT_KEY)
        origin = request.headers.get("X-Suanli-Origin") or (key.origin if key else None)
        batch = create_batch(runner, files, body, origin=origin, key=key)
        return web.json_response(batch)

    async def retrieve(request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        return web.json_response(batch_object(parts(request)[0], batch_id, owner_of(request)))

    async def cancel(request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        return web.json_response(cancel_batch(parts(request)[0], batch_id, owner_of(request)))

    async def listing(request: web.Request) -> web.Response:
        return web.json_response(list_batches(parts(request)[0], dict(request.query), owner_of(request)))

    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches", listing)
    app.router.add_get("/v1/batches/{batch_id}", retrieve)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel)


async def _json(request: web.Request) -> object:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}", param=None, code="invalid_json") from exc
    check_depth(body)
    return body
