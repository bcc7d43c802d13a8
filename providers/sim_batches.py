"""The simulated platform's batch API, at the region's ``batch_api.price_factor`` of the list price.

    POST /v1/batches                {input_file_id, endpoint, completion_window, metadata}
    GET  /v1/batches                list, newest first (``metadata`` lets a client find its own)
    GET  /v1/batches/{id}           validating -> in_progress -> completed, on the sim's clock
    POST /v1/batches/{id}/cancel
    GET  /v1/files/{id}/content     an uploaded file or a batch's output/error file

Input files are uploaded with ``POST /v1/files`` (purpose ``batch``, ``providers/sim_finetune.py``).
Only a region with ``batch_api`` offers batches (else 404 ``unsupported_endpoint``); only
``/v1/chat/completions`` lines are run. A batch takes ``BATCH_S_PER_LINE`` per line times the
sim's ``latency_scale`` (capped at its window); its lines are answered like live requests
(deterministic, no prompt cache) and charged to the sim's wallet at the batch price, once,
when the batch completes.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from suanli.providers.sim_finetune import TUNING
from suanli.providers.sim_state import SimState

__all__ = ["BATCH_S_PER_LINE", "add_batch_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (sim state, a line's body) -> (HTTP status, its whole JSON answer or OpenAI error body)
Answer = Callable[[SimState, dict], tuple[int, dict]]

BATCH_S_PER_LINE = 0.05


@dataclass(slots=True)
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    created_s: float
    done_s: float
    metadata: dict | None
    lines: int
    cancelled_s: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})


_BATCHES = web.AppKey("sim_batches", dict)  # batch id -> _Batch


class _Refused(Exception):
    def __init__(self, status: int, message: str, code: str | None, param: str | None = None) -> None:
        super().__init__(message)
        kind = "invalid_request_error" if status < 500 else "server_error"
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _window_s(text: object) -> float | None:
    if isinstance(text, str) and text.endswith("h") and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * 3600.0
    return None


def add_batch_routes(app: web.Application, state_key: web.AppKey[SimState], answer: Answer) -> None:
    """Register the batch endpoints on a sim app whose SimState is at ``state_key``."""
    app[_BATCHES] = {}

    def state(request: web.Request) -> SimState:
        found = request.app[state_key]
        found.count("requests")
        expected = found.region.api_key
        if expected and request.headers.get("Authorization", "") != f"Bearer {expected}":
            raise _Refused(401, "Incorrect API key provided.", "invalid_api_key")
        if found.region.batch_api is None:
            raise _Refused(404, "This platform does not offer a batch API.", "unsupported_endpoint")
        return found

    async def create(request: web.Request) -> web.Response:
        sim = state(request)
        body = orjson.loads(await request.read() or b"{}")
        if body.get("endpoint") != "/v1/chat/completions":
            message = "Only /v1/chat/completions batches are supported."
            raise _Refused(400, message, "invalid_value", "endpoint")
        found = request.app[TUNING].files.get(body.get("input_file_id"))
        if found is None:
            raise _Refused(400, "input_file_id is not a file uploaded here.", "invalid_file", "input_file_id")
        window_s = _window_s(body.get("completion_window"))
        api = sim.region.batch_api
        if window_s is None or api is None or window_s < api.window_h * 3600.0:
            message = f"completion_window must be at least {api.window_h:g}h here." if api else "no batch API"
            raise _Refused(400, message, "invalid_value", "completion_window")
        if sim.fails():
            raise _Refused(sim.behaviour.error_status, "Simulated failure.", "service_unavailable")
        lines = sum(1 for raw in found[1].splitlines() if raw.strip())
        now = sim.now_s()
        duration_s = min(lines * BATCH_S_PER_LINE * sim.latency_scale, window_s)
        batch = _Batch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            completion_window=body["completion_window"],
            created_s=now,
            done_s=now + duration_s,
            metadata=body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
            lines=lines,
        )
        request.app[_BATCHES][batch.id] = batch
        return web.json_response(_object(request.app, sim, batch))

    async def retrieve(request: web.Request) -> web.Response:
        sim = state(request)
        return web.json_response(_object(request.app, sim, _batch(request)))

    async def listing(request: web.Request) -> web.Response:
        sim = state(request)
        batches = sorted(request.app[_BATCHES].values(), key=lambda b: b.created_s, reverse=True)
        data = [_object(request.app, sim, b) for b in batches]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def cancel(request: web.Request) -> web.Response:
        sim = state(request)
        batch = _batch(request)
        if _status(sim, batch) in ("validating", "in_progress"):
            batch.cancelled_s = sim.now_s()
        return web.json_response(_object(request.app, sim, batch))

    async def content(request: web.Request) -> web.StreamResponse:
        request.app[state_key].count("requests")
        found = request.app[TUNING].files.get(request.match_info["file_id"])
        if found is None:
            raise _Refused(404, "No such file.", "not_found")
        return web.Response(body=found[1], content_type="application/octet-stream")

    def _object(app_: web.Application, sim: SimState, batch: _Batch) -> dict:
        status = _status(sim, batch)
        if status == "completed" and batch.output_file_id is None and batch.error_file_id is None:
            _finish(app_, sim, batch, answer)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_s),
            "completed_at": int(batch.done_s) if status == "completed" else None,
            "cancelled_at": int(batch.cancelled_s) if batch.cancelled_s is not None else None,
            "request_counts": dict(batch.counts, total=batch.lines),
            "metadata": batch.metadata,
        }

    for method, path, handler in (
        ("POST", "/v1/batches", create),
        ("GET", "/v1/batches", listing),
        ("GET", "/v1/batches/{batch_id}", retrieve),
        ("POST", "/v1/batches/{batch_id}/cancel", cancel),
        ("GET", "/v1/files/{file_id}/content", content),
    ):
        app.router.add_route(method, path, _answers_errors(handler))


def _batch(request: web.Request) -> _Batch:
    batch = request.app[_BATCHES].get(request.match_info["batch_id"])
    if batch is None:
        raise _Refused(404, "No such batch.", "not_found")
    return batch


def _status(sim: SimState, batch: _Batch) -> str:
    if batch.cancelled_s is not None:
        return "cancelled"
    return "completed" if sim.now_s() >= batch.done_s else "in_progress"


def _finish(app: web.Application, sim: SimState, batch: _Batch, answer: Answer) -> None:
    """Run every line once, charge it at the batch price, and keep the output and error files."""
    files = app[TUNING].files
    api = sim.region.batch_api
    factor = api.price_factor if api is not None else 1.0
    good: list[bytes] = []
    bad: list[bytes] = []
    for raw in files[batch.input_file_id][1].splitlines():
        if not raw.strip():
            continue
        item = orjson.loads(raw)
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        status, whole = answer(sim, item.get("body") if isinstance(item.get("body"), dict) else {})
        entry = {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": item.get("custom_id"),
            "response": {"status_code": status, "request_id": request_id, "body": whole},
            "error": None,
        }
        if status != 200:
            bad.append(orjson.dumps(entry))
            continue
        usage = whole["usage"]
        sim.charge(whole["model"], usage["prompt_tokens"], usage["completion_tokens"], price_factor=factor)
        good.append(orjson.dumps(entry))
    batch.counts = {"total": batch.lines, "completed": len(good), "failed": len(bad)}
    if good:
        batch.output_file_id = _keep(files, f"{batch.id}_output.jsonl", good)
    if bad:
        batch.error_file_id = _keep(files, f"{batch.id}_error.jsonl", bad)


def _keep(files: dict, filename: str, lines: list[bytes]) -> str:
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    files[file_id] = (filename, b"\n".join(lines) + b"\n")
    return file_id


def _answers_errors(handler: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Refused as exc:
            return web.json_response(exc.body, status=exc.status)
        except orjson.JSONDecodeError:
            body = {"error": {"message": "The body is not valid JSON.", "type": "invalid_request_error",
                              "param": None, "code": "invalid_json"}}
            return web.json_response(body, status=400)

    return run

