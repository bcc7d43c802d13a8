"""``/v1/fine_tuning/jobs``: placed by the optimizer, forwarded to the chosen region, recorded on the ledger.

create -> validating_files (file and model checked, tokens counted) -> queued (the
deferral scheduler picked a region with the ``fine_tuning`` capability and a start in
``[now, now + deadline]`` by ``price.train``, off-peak windows and ``training`` vouchers)
-> at the start: the training file is uploaded to that region and the job created
there -> running (its status polled) -> succeeded / failed / cancelled. On success
the trained tokens are charged on the ledger (class ``training``, request id = job id),
so the region, voucher and cost sit on the hash-chained usage like any request.
The deadline is ``X-Suanli-Deadline-S`` (seconds) or the training class's default.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

import aiohttp
import orjson
from aiohttp import web

from optimizer import Ask, CapacityBook, State, index_for, rank
from providers import UpstreamError, Usage
from providers.finetune_client import FineTuneClient, training_tokens
from router.batch_plan import LineAsk, place_jobs
from router.clocks import clock_speed
from router.core import RequestContext, Router
from router.errors import BadRequestError, BudgetExceededError, UpstreamFailedError
from router.files import FileStore, not_found, owned, owner_of, page
from router.job_holds import JobHolds
from router.keys import KeyPolicy, load_policy, within_regions
from router.results import Routing
from router.workload_db import WorkloadDB

__all__ = ["FineTuner", "fine_tuning_routes"]

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
        self._client: FineTuneClient | None = None
        self.holds = JobHolds(router)

    def now_s(self) -> float:
        return self.router.clock().timestamp()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._client = FineTuneClient(self._session)
        for row in self.db.rows("SELECT * FROM wl_ft_jobs WHERE status IN (?, ?, ?)", _ACTIVE):
            await self._hold_again(row)
            self._spawn(row["id"])

    async def _hold_again(self, row: dict) -> None:
        """A job resumed after a restart holds its key's budget again (recovery voided the old hold)."""
        if row["key_id"] is None or row["region"] is None:
            return
        key = await self._policy(row["key_id"])
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
        self._event(job_id, "info", f"Validated training file: {reference} reference tokens to train")
        self._event(
            job_id,
            "info",
            f"suanli placed the job on region {slot.region}, to start at {when}"
            + (f" paid by voucher {slot.voucher}" if slot.voucher else ""),
        )
        self._spawn(job_id)
        return self.job_object(job_id)

    def job_object(self, job_id: str, owner: str | None = None) -> dict:
        """The OpenAI job object (404 when unknown or another key's)."""
        mine, params = owned(owner)
        row = self.db.row(f"SELECT * FROM wl_ft_jobs WHERE id = ?{mine}", (job_id, *params))
        if row is None:
            raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
        return {
            "id": row["id"],
            "object": "fine_tuning.job",
            "model": row["model"],
            "created_at": row["created_at"],
            "finished_at": row["finished_at"],
            "fine_tuned_model": row["fine_tuned_model"],
            "organization_id": "org-suanli",
            "result_files": [],
            "status": row["status"],
            "validation_file": row["validation_file"],
            "training_file": row["training_file"],
            "hyperparameters": orjson.loads(row["hyperparameters"]),
            "trained_tokens": row["trained_tokens"],
            "error": orjson.loads(row["error"]) if row["error"] else None,
            "seed": row["seed"] or 0,
            "suffix": row["suffix"],
            "metadata": orjson.loads(row["metadata"]) if row["metadata"] else None,
            "estimated_finish": None,
            "integrations": [],
            "suanli": {
                "region": row["region"],
                "start_at": int(row["start_s"]) if row["start_s"] is not None else None,
                "voucher": row["voucher"],
                "estimated_tokens": row["estimated_tokens"],
                "cost_yuan": row["cost_yuan"],
                "cash_yuan": row["cash_yuan"],
            },
        }

    def listing(self, query: dict[str, str], owner: str | None = None) -> dict:
        limit = _limit(query.get("limit"))
        mine, params = owned(owner)
        sql = f"SELECT id FROM wl_ft_jobs WHERE 1 = 1{mine} ORDER BY created_at DESC, rowid DESC"
        ids = [r["id"] for r in self.db.rows(sql, params)]
        return page([self.job_object(i) for i in ids], query.get("after"), limit)

    def events(self, job_id: str, query: dict[str, str], owner: str | None = None) -> dict:
        self.job_object(job_id, owner)
        rows = self.db.rows("SELECT * FROM wl_ft_events WHERE job_id = ? ORDER BY seq DESC", (job_id,))
        items = [
            {
                "id": f"ftevent-{r['seq']}",
                "object": "fine_tuning.job.event",
                "created_at": r["created_at"],
                "level": r["level"],
                "message": r["message"],
                "type": "message",
                "data": None,
            }
            for r in rows
        ]
        return page(items, query.get("after"), _limit(query.get("limit")))

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
        await self._cancel_upstream(self._row(job_id))
        self._set(job_id, status="cancelled", finished_at=int(self.now_s()))
        await self.holds.release(job_id)
        self._event(job_id, "info", "Job cancelled")
        return self.job_object(job_id)

    async def _cancel_upstream(self, row: dict) -> None:
        # Forwarding may have been cut mid-way: the region can hold the job without us knowing its id.
        if row["upstream_id"] is None and (row["start_s"] is None or row["start_s"] > self.now_s()):
            return
        try:
            region, base = self._region(row["region"])
            upstream_id = row["upstream_id"] or next(
                (
                    j["id"]
                    for j in await self._api.list(region, base)
                    if (j.get("metadata") or {}).get("suanli_job") == row["id"]
                ),
                None,
            )
            if upstream_id is not None:
                await self._api.cancel(region, base, upstream_id)
        except UpstreamError as exc:
            log.warning("fine-tuning job %s: cancel at %s failed: %s", row["id"], row["region"], exc.message)

    # -- the job's life --------------------------------------------------------------------

    @property
    def _api(self) -> FineTuneClient:
        if self._client is None:
            raise RuntimeError("the fine-tuning service is not started")
        return self._client

    def _spawn(self, job_id: str) -> None:
        self._tasks[job_id] = asyncio.get_running_loop().create_task(
            self._follow(job_id), name=f"ft {job_id}"
        )

    async def _follow(self, job_id: str) -> None:
        try:
            row = self._row(job_id)
            if row["status"] == "queued":
                await self._wait_until(row["start_s"])
                row = await self._forward(row)
            while row["status"] == "running":
                region, base = self._region(row["region"])
                upstream = await self._api.retrieve(region, base, row["upstream_id"])
                status = upstream.get("status")
                if status == "succeeded":
                    await self._succeeded(row, upstream)
                    return
                if status in ("failed", "cancelled"):
                    error = upstream.get("error") or {
                        "code": "upstream_failed",
                        "message": f"the job {status}",
                    }
                    self._set(
                        job_id,
                        status=status,
                        finished_at=int(self.now_s()),
                        error=orjson.dumps(error).decode(),
                    )
                    self._event(
                        job_id, "error" if status == "failed" else "info", f"Job {status} at {region.id}"
                    )
                    return
                await asyncio.sleep(self.poll_s)
        except asyncio.CancelledError:
            raise
        except UpstreamError as exc:
            error = {"code": exc.code or "upstream_error", "message": exc.message, "param": None}
            self._set(
                job_id, status="failed", finished_at=int(self.now_s()), error=orjson.dumps(error).decode()
            )
            self._event(job_id, "error", f"Region {exc.region} failed: {exc.message}")
        except Exception:  # noqa: BLE001 - one job's failure must not take the app down; it is logged
            log.exception("fine-tuning job %s failed", job_id)
            error = {"code": "internal_error", "message": "internal error; see the server log", "param": None}
            self._set(
                job_id, status="failed", finished_at=int(self.now_s()), error=orjson.dumps(error).decode()
            )
        finally:
            # A job that ended without success gives its key's budget back; one merely stopped
            # (shut-down) keeps its hold until the process goes.
            if self.holds.holding(job_id) and self._row(job_id)["status"] in ("failed", "cancelled"):
                await self.holds.release(job_id)

    async def _wait_until(self, start_s: float) -> None:
        while (left := start_s - self.now_s()) > 0:
            speed = clock_speed(self.router.clock)
            await asyncio.sleep(min(left / speed, self.poll_s) if speed > 0 else 0.02)

    async def _forward(self, row: dict) -> dict:
        region, base = self._region(row["region"])
        # A crash between the region creating the job and us keeping its id would otherwise
        # start (and bill) a second one: adopt the job tagged with ours if it exists.
        for upstream in await self._api.list(region, base):
            if (upstream.get("metadata") or {}).get("suanli_job") == row["id"]:
                self._set(row["id"], status="running", upstream_id=upstream["id"])
                self._event(row["id"], "info", f"Found at region {region.id} as {upstream['id']}")
                return self._row(row["id"])
        data = self.files.path(row["training_file"]).read_bytes()
        uploaded = await self._api.upload(region, base, data, f"{row['training_file']}.jsonl")
        offer = region.offer(row["model"])
        body: dict = {
            "model": offer.upstream_name if offer else row["model"],
            "training_file": uploaded["id"],
            "metadata": {"suanli_job": row["id"]},
        }
        epochs = orjson.loads(row["hyperparameters"]).get("n_epochs")
        if isinstance(epochs, int):
            body["hyperparameters"] = {"n_epochs": epochs}
        for name in ("suffix", "seed"):
            if row[name] is not None:
                body[name] = row[name]
        created = await self._api.create(region, base, body)
        self._set(row["id"], status="running", upstream_id=created["id"], start_s=self.now_s())
        self._event(row["id"], "info", f"Forwarded to region {region.id} as {created['id']}")
        return self._row(row["id"])

    async def _succeeded(self, row: dict, upstream: dict) -> None:
        trained = int(upstream.get("trained_tokens") or 0)
        routing = await self._charge(row, trained)
        self._set(
            row["id"],
            status="succeeded",
            trained_tokens=trained,
            finished_at=int(self.now_s()),
            fine_tuned_model=upstream.get("fine_tuned_model"),
            cost_yuan=routing.cost_yuan,
            cash_yuan=routing.cash_yuan,
            voucher=routing.voucher,
            settled=1,
        )
        self._event(
            row["id"],
            "info",
            f"Job succeeded at {row['region']}: {trained} tokens trained, "
            f"{routing.cost_yuan:.4f} yuan ({routing.cash_yuan:.4f} in cash)",
        )

    async def _charge(self, row: dict, trained_tokens: int) -> Routing:
        """Settle the trained tokens on the ledger at the job's region and start time."""
        router = self.router
        latency_s = max(self.now_s() - row["start_s"], 0.0)
        routing = await self.holds.settle(row["id"], trained_tokens, latency_s=latency_s)
        if routing is not None:
            return routing
        # No hold here (no budget, or a restart could not take it again): the key's budget,
        # if any, still counts the cost when it fits; spend is a fact either way.
        key = await self._policy(row["key_id"])
        region = router.config.region(row["region"])
        offer = region.offer(row["model"]) if region else None
        ratio = offer.token_ratio if offer else 1.0
        ask = Ask(
            row["model"], "training", row["origin"], trained_tokens / ratio, 0.0, pinned_region=row["region"]
        )
        started = datetime.fromtimestamp(row["start_s"], UTC)
        for _ in range(3):
            ctx = RequestContext(
                work_class="training",
                origin=row["origin"],
                request_id=row["id"],
                key_id=row["key_id"],
                key=key,
            )
            options = rank(router.config, ask, State(balances=router.balances()), started)
            if not options:
                break
            option = options[0]
            # The Router's own two-phase hold and settlement, so vouchers and the usage chain stay exact.
            try:
                hold = await router._reserve(row["id"], option, ask, ctx)
            except BudgetExceededError:
                key = None
                continue
            if hold is None:
                continue  # the voucher ran dry meanwhile: rank again
            routing = Routing(
                request_id=row["id"],
                region=option.region.id,
                model=row["model"],
                work_class="training",
                origin=row["origin"],
                voucher=hold.voucher_id,
                cash_yuan=option.charge.cash_yuan,
                cost_yuan=option.charge.cost_yuan,
            )
            await router._settle(
                hold,
                option,
                ask,
                Usage(trained_tokens, 0, reported=True),
                routing,
                latency_s=latency_s,
                ttft_s=None,
            )
            return routing
        raise UpstreamFailedError(f"region {row['region']} no longer offers fine-tuning of {row['model']!r}")

    async def _policy(self, key_id: str | None) -> KeyPolicy | None:
        """The job's stored key policy, or None when it cannot be read (the charge goes on without it)."""
        try:
            return await load_policy(self.router.ledger, self.router.config, key_id)
        except Exception as exc:  # noqa: BLE001 - spend is a fact: charge it even without the key's budget
            log.warning("fine-tuning job of key %s: its policy could not be read: %s", key_id, exc)
            return None

    def _region(self, region_id: str):  # noqa: ANN202 - (Region, base URL)
        region = self.router.config.region(region_id)
        base = self.router.base_url(region_id) if region else None
        if region is None or not base:
            raise UpstreamError(region_id, 0, "the region has no base_url", retryable=False)
        return region, base.rstrip("/")

    def _row(self, job_id: str) -> dict:
        row = self.db.row("SELECT * FROM wl_ft_jobs WHERE id = ?", (job_id,))
        if row is None:
            raise RuntimeError(f"fine-tuning job {job_id} vanished from the database")
        return row

    def _set(self, job_id: str, **fields: object) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE wl_ft_jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def _event(self, job_id: str, level: str, message: str) -> None:
        self.db.execute(
            "INSERT INTO wl_ft_events (job_id, created_at, level, message) VALUES (?, ?, ?, ?)",
            (job_id, int(self.now_s()), level, message),
        )


def fine_tuning_routes(app: web.Application, tuner: Callable[[web.Request], FineTuner]) -> None:
    """Register ``/v1/fine_tuning/jobs`` on ``app``; ``tuner(request)`` finds the FineTuner."""

    async def create(request: web.Request) -> web.Response:
        from router.app import CLIENT_KEY  # the app imports this module: resolve at call time

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


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequestError("limit must be an integer between 1 and 100", param="limit")
    return int(raw)
