"""``/v1/fine_tuning/jobs``: placed by the optimizer, forwarded to the chosen region, recorded on the ledger.

create -> validating_files (file and model checked, tokens counted) -> queued (the
deferral scheduler picked a region with the ``fine_tuning`` capability and a start in
``[now, now + deadline]`` by ``price.train``, off-peak windows and ``training`` vouchers)
-> at the start: the training file is uploaded to that region and the job created
there -> running (its status polled) -> succeeded / failed / cancelled. On success
the trained tokens are charged on the ledger (class ``training``, request id = job id),
so the region, voucher and cost sit on the hash-chained usage like any request.
The deadline is ``X-Suanli-Deadline-S`` (seconds) or the training class's default.

The job's rows live in ``fine_tuning_records``, its forwarding and polling in
``fine_tuning_follow``, its charge in ``fine_tuning_charge`` and its HTTP handlers in
``fine_tuning_routes``; this module checks, places and records new jobs and owns their tasks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import suppress
from datetime import UTC, datetime

import aiohttp
import orjson

from suanli.optimizer import CapacityBook, index_for
from suanli.providers.finetune_client import training_tokens
from suanli.router.core.keys import KeyPolicy, within_regions
from suanli.router.core.router import Router
from suanli.router.errors import BadRequestError
from suanli.router.workloads.batches.plan import LineAsk, place_jobs
from suanli.router.workloads.db import WorkloadDB
from suanli.router.workloads.files import FileStore, not_found
from suanli.router.workloads.fine_tuning.charge import key_policy
from suanli.router.workloads.fine_tuning.follow import JobFollower
from suanli.router.workloads.fine_tuning.records import JobRecords
from suanli.router.workloads.job_holds import JobHolds

__all__ = ["FineTuner"]

log = logging.getLogger("suanli.fine_tuning")

_ACTIVE = ("validating_files", "queued", "running")
_FINAL = ("succeeded", "failed", "cancelled")


class FineTuner:
    """Places, forwards and follows fine-tuning jobs; resumes them after a restart."""

    def __init__(self, router: Router, db: WorkloadDB, files: FileStore, *, poll_s: float = 2.0) -> None:
        self.router = router
        self.db = db
        self.files = files
        self.poll_s = poll_s
        self._tasks: dict[str, asyncio.Task] = {}
        self._session: aiohttp.ClientSession | None = None
        self.holds = JobHolds(router)
        self.records = JobRecords(db, self.now_s)
        self.follower = JobFollower(router, self.records, files, self.holds, poll_s=poll_s)

    def now_s(self) -> float:
        return self.router.clock().timestamp()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self.follower.start(self._session)
        for row in self.db.rows("SELECT * FROM wl_ft_jobs WHERE status IN (?, ?, ?)", _ACTIVE):
            await self._hold_again(row)
            self._spawn(row["id"])

    async def _hold_again(self, row: dict) -> None:
        """A job resumed after a restart holds its key's budget again (recovery voided the old hold)."""
        if row["key_id"] is None or row["region"] is None:
            return
        key = await key_policy(self.router, row["key_id"])
        try:
            await self.holds.hold(
                row["id"],
                model=row["model"],
                origin=row["origin"],
                region=row["region"],
                start_s=row["start_s"] if row["start_s"] is not None else self.now_s(),
                reference_tokens=row["estimated_tokens"],
                key=key,
            )
        except Exception as exc:  # noqa: BLE001 - accepted before: it runs on, charged at its end
            log.warning("fine-tuning job %s: its budget hold could not be taken again: %s", row["id"], exc)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()

    # -- the API ---------------------------------------------------------------------------

    async def create(
        self,
        body: object,
        *,
        origin: str | None,
        deadline_s: str | None,
        key_id: str | None = None,
        allowed_regions: frozenset[str] | None = None,
        key: KeyPolicy | None = None,
    ) -> dict:
        """Check, place and record a job; it is forwarded when its start comes.

        ``allowed_regions`` (a virtual key's policy) bounds where it may be placed; ``key``'s
        budget holds the job's estimated cost until it ends (429 budget_exceeded if it cannot).
        """
        if not isinstance(body, dict):
            raise BadRequestError("the request body must be a JSON object", param=None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequestError("missing required parameter: 'model'", param="model")
        file_id = body.get("training_file")
        if not isinstance(file_id, str) or not file_id:
            raise BadRequestError("missing required parameter: 'training_file'", param="training_file")
        config = within_regions(self.router.config, allowed_regions)
        origin = origin or config.origin
        if origin not in ("east", "west"):
            raise BadRequestError(f"unknown origin {origin!r}: use east or west", param="X-Suanli-Origin")
        window_s = _deadline(deadline_s, config.classes.deadline_s("training"))
        if not index_for(config).candidates(model, "training", origin):  # type: ignore[arg-type]
            raise BadRequestError(
                f"no region with the fine_tuning capability offers model {model!r}"
                + ("" if allowed_regions is None else " among the regions this key may use"),
                param="model",
                code="model_not_available",
            )
        try:
            source = self.files.get(file_id, key_id)  # a key trains only on its own files
        except BadRequestError:
            raise not_found("file", file_id, "training_file") from None
        if source["purpose"] != "fine-tune":
            raise BadRequestError(
                f"file {file_id!r} has purpose {source['purpose']!r}, not fine-tune", param="training_file"
            )
        validation = body.get("validation_file")
        if validation is not None:
            if not isinstance(validation, str):
                raise BadRequestError("validation_file must be a file id", param="validation_file")
            try:
                self.files.get(validation, key_id)  # it too must be the key's own
            except BadRequestError:
                raise not_found("file", validation, "validation_file") from None
        hyper = body.get("hyperparameters") or {}
        if not isinstance(hyper, dict):
            raise BadRequestError("hyperparameters must be an object", param="hyperparameters")
        epochs = hyper.get("n_epochs", "auto")
        if epochs != "auto" and (
            isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 50
        ):
            raise BadRequestError("n_epochs must be auto or an integer from 1 to 50", param="hyperparameters")
        data = self.files.path(file_id).read_bytes()
        reference = training_tokens(data) * (1 if epochs == "auto" else epochs)
        now_s = self.now_s()
        slots = await asyncio.to_thread(
            place_jobs,
            config,
            [LineAsk(0, model, reference, 0, now_s, now_s + window_s)],
            work_class="training",
            origin=origin,
            now_s=now_s,  # type: ignore[arg-type]
            book=CapacityBook(config),  # training books no tpm/rpm
            balances=self.router.balances(),
        )
        slot = slots[0]
        if slot.region is None:
            raise BadRequestError(
                "no fine-tuning region can start this job before its deadline",
                param="X-Suanli-Deadline-S",
                code="deadline_infeasible",
            )
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        await self.holds.hold(
            job_id,
            model=model,
            origin=origin,
            region=slot.region,
            start_s=slot.start_s,
            reference_tokens=reference,
            key=key,
        )
        try:
            self.db.execute(
                "INSERT INTO wl_ft_jobs (id, model, training_file, validation_file, hyperparameters, suffix,"
                " seed, metadata, origin, key_id, status, created_at, deadline_s, estimated_tokens, region,"
                " start_s, voucher)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    model,
                    file_id,
                    body.get("validation_file"),
                    orjson.dumps({"n_epochs": epochs}).decode(),
                    body.get("suffix"),
                    body.get("seed"),
                    orjson.dumps(body.get("metadata")).decode() if body.get("metadata") else None,
                    origin,
                    key_id,
                    int(now_s),
                    window_s,
                    round(reference),
                    slot.region,
                    slot.start_s,
                    slot.voucher,
                ),
            )
        except BaseException:
            await self.holds.release(job_id)  # nothing recorded: nothing held
            raise
        when = datetime.fromtimestamp(slot.start_s, UTC).isoformat()
        self.records.event(job_id, "info", f"Validated training file: {reference} reference tokens to train")
        self.records.event(
            job_id,
            "info",
            f"suanli placed the job on region {slot.region}, to start at {when}"
            + (f" paid by voucher {slot.voucher}" if slot.voucher else ""),
        )
        self._spawn(job_id)
        return self.job_object(job_id)

    def job_object(self, job_id: str, owner: str | None = None) -> dict:
        """The OpenAI job object (404 when unknown or another key's)."""
        return self.records.job_object(job_id, owner)

    def listing(self, query: dict[str, str], owner: str | None = None) -> dict:
        return self.records.listing(query, owner)

    def events(self, job_id: str, query: dict[str, str], owner: str | None = None) -> dict:
        return self.records.events(job_id, query, owner)

    async def cancel(self, job_id: str, owner: str | None = None) -> dict:
        row = self.job_object(job_id, owner)
        if row["status"] in _FINAL:
            raise BadRequestError(
                f"a job that has {row['status']} cannot be cancelled",
                param="fine_tuning_job_id",
                code="job_not_cancellable",
            )
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task
        await self.follower.cancel_upstream(self.records.row(job_id))
        self.records.set(job_id, status="cancelled", finished_at=int(self.now_s()))
        await self.holds.release(job_id)
        self.records.event(job_id, "info", "Job cancelled")
        return self.job_object(job_id)

    def _spawn(self, job_id: str) -> None:
        self._tasks[job_id] = asyncio.get_running_loop().create_task(
            self.follower.follow(job_id), name=f"ft {job_id}"
        )


def _deadline(raw: str | None, default_s: float) -> float:
    if raw is None:
        return default_s
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 60 <= value <= 30 * 86400:
        raise BadRequestError(
            "X-Suanli-Deadline-S must be seconds between 60 and 2592000", param="X-Suanli-Deadline-S"
        )
    return value
