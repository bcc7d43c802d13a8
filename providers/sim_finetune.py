"""The simulated platform's fine-tuning API: files and a job lifecycle that runs on the sim's clock.

    POST /v1/files                        multipart ``purpose`` (fine-tune | batch) + ``file``: kept in memory
    POST /v1/fine_tuning/jobs             ``model`` (upstream name), ``training_file``, ``hyperparameters``
    GET  /v1/fine_tuning/jobs             list, newest first
    GET  /v1/fine_tuning/jobs/{id}        the job; its status follows from the time since creation
    POST /v1/fine_tuning/jobs/{id}/cancel
    GET  /v1/fine_tuning/jobs/{id}/events

A job trains ``reference tokens of the file x token_ratio x n_epochs`` model tokens at
``TRAIN_TOKENS_PER_S``, times the sim's ``latency_scale`` (0: it has succeeded by the
first look). Status: validating_files -> running -> succeeded (or cancelled). The
region must list the ``fine_tuning`` capability; ``error_rate`` applies to creation.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import BodyPartReader, web

from suanli.providers.finetune_client import training_tokens
from suanli.providers.sim_state import SimState

__all__ = ["TRAIN_TOKENS_PER_S", "TUNING", "add_finetune_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TRAIN_TOKENS_PER_S = 20_000.0
_VALIDATING_SHARE = 0.1  # of a job's time spent validating its file


@dataclass(slots=True)
class _Job:
    id: str
    model: str
    training_file: str
    trained_tokens: int
    epochs: int
    created_at: int
    started: float  # time.monotonic() at creation
    duration_s: float
    cancelled_at: float | None = None
    metadata: dict | None = None
    events: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class _Tuning:
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file id -> (filename, data)
    jobs: dict[str, _Job] = field(default_factory=dict)


TUNING = web.AppKey("sim_tuning", _Tuning)


def add_finetune_routes(app: web.Application, state_key: web.AppKey[SimState]) -> None:
    """Register the fine-tuning endpoints on a sim app whose SimState is at ``state_key``."""
    app[TUNING] = _Tuning()

    def state(request: web.Request) -> SimState:
        found = request.app[state_key]
        found.count("requests")
        expected = found.region.api_key
        if expected and request.headers.get("Authorization", "") != f"Bearer {expected}":
            raise _error(401, "Incorrect API key provided.", "invalid_api_key")
        return found

    async def upload(request: web.Request) -> web.Response:
        state(request)
        reader = await request.multipart()
        purpose, data, filename = None, None, "train.jsonl"
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = await part.text()
            elif part.name == "file":
                filename = part.filename or filename
                data = await part.read()
        if purpose not in ("fine-tune", "batch") or not data:
            raise _error(400, "Upload a non-empty file with purpose fine-tune or batch.", None, "file")
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        request.app[TUNING].files[file_id] = (filename, bytes(data))
        return web.json_response(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "filename": filename,
                "purpose": purpose,
                "created_at": int(time.time()),
                "status": "processed",
            }
        )

    async def create(request: web.Request) -> web.Response:
        sim = state(request)
        body = orjson.loads(await request.read() or b"{}")
        if "fine_tuning" not in sim.region.capabilities:
            raise _error(404, "This platform does not offer fine-tuning.", "unsupported_endpoint")
        offer = sim.offers.get(body.get("model"))
        if offer is None:
            raise _error(
                404, f"The model `{body.get('model')}` cannot be fine-tuned here.", "model_not_found", "model"
            )
        found = request.app[TUNING].files.get(body.get("training_file"))
        if found is None:
            raise _error(400, "training_file is not a file uploaded here.", "invalid_file", "training_file")
        if sim.fails():
            raise _error(sim.behaviour.error_status, "Simulated failure.", "service_unavailable")
        epochs = (body.get("hyperparameters") or {}).get("n_epochs", 1)
        epochs = epochs if isinstance(epochs, int) and epochs > 0 else 1
        tokens = math.ceil(round(training_tokens(found[1]) * offer.token_ratio, 6)) * epochs
        job = _Job(
            id=f"ftjob-{uuid.uuid4().hex[:24]}",
            model=offer.upstream_name,
            training_file=body["training_file"],
            trained_tokens=tokens,
            epochs=epochs,
            created_at=int(time.time()),
            started=time.monotonic(),
            duration_s=tokens / TRAIN_TOKENS_PER_S * sim.latency_scale,
            metadata=body.get("metadata") if isinstance(body.get("metadata"), dict) else None,
        )
        job.events.append(_event("info", "Validating training file"))
        request.app[TUNING].jobs[job.id] = job
        return web.json_response(_job_object(sim, job))

    async def retrieve(request: web.Request) -> web.Response:
        sim = state(request)
        return web.json_response(_job_object(sim, _job(request)))

    async def listing(request: web.Request) -> web.Response:
        sim = state(request)
        jobs = sorted(request.app[TUNING].jobs.values(), key=lambda j: j.started, reverse=True)
        return web.json_response(
            {"object": "list", "data": [_job_object(sim, j) for j in jobs], "has_more": False}
        )

    async def cancel(request: web.Request) -> web.Response:
        sim = state(request)
        job = _job(request)
        status = _status(job)
        if status in ("succeeded", "failed", "cancelled"):
            raise _error(400, f"A job that has {status} cannot be cancelled.", "invalid_state")
        job.cancelled_at = time.monotonic()
        job.events.append(_event("info", "Job cancelled"))
        return web.json_response(_job_object(sim, job))

    async def events(request: web.Request) -> web.Response:
        state(request)
        job = _job(request)
        return web.json_response({"object": "list", "data": list(reversed(job.events)), "has_more": False})

    app.router.add_post("/v1/files", _answers_errors(upload))
    app.router.add_post("/v1/fine_tuning/jobs", _answers_errors(create))
    app.router.add_get("/v1/fine_tuning/jobs", _answers_errors(listing))
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}", _answers_errors(retrieve))
    app.router.add_post("/v1/fine_tuning/jobs/{job_id}/cancel", _answers_errors(cancel))
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}/events", _answers_errors(events))


def _job(request: web.Request) -> _Job:
    job = request.app[TUNING].jobs.get(request.match_info["job_id"])
    if job is None:
        raise _error(404, "No such fine-tuning job.", "not_found")
    return job


def _status(job: _Job) -> str:
    if job.cancelled_at is not None:
        return "cancelled"
    elapsed = time.monotonic() - job.started
    if elapsed >= job.duration_s:
        return "succeeded"
    return "validating_files" if elapsed < _VALIDATING_SHARE * job.duration_s else "running"


def _job_object(sim: SimState, job: _Job) -> dict:
    status = _status(job)
    if status == "succeeded" and not any(e["message"] == "Job succeeded" for e in job.events):
        job.events.append(_event("info", f"Trained {job.trained_tokens} tokens"))
        job.events.append(_event("info", "Job succeeded"))
    done = status == "succeeded"
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.created_at + math.ceil(job.duration_s) if done else None,
        "fine_tuned_model": f"ft:{job.model}:{sim.region.id}:{job.id[-8:]}" if done else None,
        "organization_id": f"org-sim-{sim.region.id}",
        "result_files": [],
        "status": status,
        "validation_file": None,
        "training_file": job.training_file,
        "hyperparameters": {"n_epochs": job.epochs, "batch_size": 1, "learning_rate_multiplier": 1.0},
        "trained_tokens": job.trained_tokens if done else None,
        "error": None,
        "seed": 0,
        "metadata": job.metadata,
    }


def _event(level: str, message: str) -> dict:
    return {
        "id": f"ftevent-{uuid.uuid4().hex[:24]}",
        "object": "fine_tuning.job.event",
        "created_at": int(time.time()),
        "level": level,
        "message": message,
    }


class _Refused(Exception):
    """An error answer, rendered by ``_answers_errors`` (the sim app's middleware renders only its own)."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def _error(status: int, message: str, code: str | None, param: str | None = None) -> _Refused:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _Refused(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _answers_errors(handler: Handler) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Refused as exc:
            return web.json_response(exc.body, status=exc.status)
        except orjson.JSONDecodeError:
            return web.json_response(
                _error(400, "The body is not valid JSON.", "invalid_json").body, status=400
            )

    return run
