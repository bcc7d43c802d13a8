"""A placed fine-tuning job's life at its region: wait for its start, forward it, poll it to its end."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson

from suanli.config import Region
from suanli.providers import UpstreamError
from suanli.providers.finetune_client import FineTuneClient
from suanli.router.core.clocks import clock_speed
from suanli.router.core.router import Router
from suanli.router.workloads.files import FileStore
from suanli.router.workloads.fine_tuning.charge import charge_job
from suanli.router.workloads.fine_tuning.records import JobRecords
from suanli.router.workloads.job_holds import JobHolds

__all__ = ["JobFollower"]

log = logging.getLogger("suanli.fine_tuning")


class JobFollower:
    """Forwards each job to its placed region at its start and follows it there until it ends."""

    def __init__(
        self, router: Router, records: JobRecords, files: FileStore, holds: JobHolds, *, poll_s: float
    ) -> None:
        self.router = router
        self.records = records
        self.files = files
        self.holds = holds
        self.poll_s = poll_s
        self._client: FineTuneClient | None = None

    def start(self, session: aiohttp.ClientSession) -> None:
        self._client = FineTuneClient(session)

    def now_s(self) -> float:
        return self.router.clock().timestamp()

    @property
    def _api(self) -> FineTuneClient:
        if self._client is None:
            raise RuntimeError("the fine-tuning service is not started")
        return self._client

    async def follow(self, job_id: str) -> None:
        """Run one job from queued (or wherever a restart found it) to its end; a failure ends it failed."""
        records = self.records
        try:
            row = records.row(job_id)
            if row["status"] == "queued":
                await self._wait_until(row["start_s"])
                row = await self._forward(row)
            while row["status"] == "running":
                region, base = self.region(row["region"])
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
                    await self._end(job_id, status, error)
                    records.event(
                        job_id, "error" if status == "failed" else "info", f"Job {status} at {region.id}"
                    )
                    return
                await asyncio.sleep(self.poll_s)
        except asyncio.CancelledError:
            raise
        except UpstreamError as exc:
            error = {"code": exc.code or "upstream_error", "message": exc.message, "param": None}
            await self._end(job_id, "failed", error)
            records.event(job_id, "error", f"Region {exc.region} failed: {exc.message}")
        except Exception:  # noqa: BLE001 - one job's failure must not take the app down; it is logged
            log.exception("fine-tuning job %s failed", job_id)
            error = {"code": "internal_error", "message": "internal error; see the server log", "param": None}
            await self._end(job_id, "failed", error)
        finally:
            # A job that ended without success gives its key's budget back; one merely stopped
            # (shut-down) keeps its hold until the process goes.
            if self.holds.holding(job_id) and records.row(job_id)["status"] in ("failed", "cancelled"):
                await self.holds.release(job_id)

    async def _end(self, job_id: str, status: str, error: dict) -> None:
        # The hold goes before the status: a caller that sees the job failed sees its budget back.
        if self.holds.holding(job_id):
            try:
                await self.holds.release(job_id)
            except Exception:  # noqa: BLE001 - the job still ends; the finally clause tries the release again
                log.exception("fine-tuning job %s: releasing its hold failed", job_id)
        finished = int(self.now_s())
        self.records.set(job_id, status=status, finished_at=finished, error=orjson.dumps(error).decode())

    async def cancel_upstream(self, row: dict) -> None:
        """Cancel the job at its region if it got there; a failure there is logged, not raised."""
        # Forwarding may have been cut mid-way: the region can hold the job without us knowing its id.
        if row["upstream_id"] is None and (row["start_s"] is None or row["start_s"] > self.now_s()):
            return
        try:
            region, base = self.region(row["region"])
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

    def region(self, region_id: str) -> tuple[Region, str]:
        """The region and its base URL (no trailing slash); an UpstreamError when it has none."""
        region = self.router.config.region(region_id)
        base = self.router.base_url(region_id) if region else None
        if region is None or not base:
            raise UpstreamError(region_id, 0, "the region has no base_url", retryable=False)
        return region, base.rstrip("/")

    async def _wait_until(self, start_s: float) -> None:
        while (left := start_s - self.now_s()) > 0:
            speed = clock_speed(self.router.clock)
            await asyncio.sleep(min(left / speed, self.poll_s) if speed > 0 else 0.02)

    async def _forward(self, row: dict) -> dict:
        records = self.records
        region, base = self.region(row["region"])
        # A crash between the region creating the job and us keeping its id would otherwise
        # start (and bill) a second one: adopt the job tagged with ours if it exists.
        for upstream in await self._api.list(region, base):
            if (upstream.get("metadata") or {}).get("suanli_job") == row["id"]:
                records.set(row["id"], status="running", upstream_id=upstream["id"])
                records.event(row["id"], "info", f"Found at region {region.id} as {upstream['id']}")
                return records.row(row["id"])
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
        records.set(row["id"], status="running", upstream_id=created["id"], start_s=self.now_s())
        records.event(row["id"], "info", f"Forwarded to region {region.id} as {created['id']}")
        return records.row(row["id"])

    async def _succeeded(self, row: dict, upstream: dict) -> None:
        trained = int(upstream.get("trained_tokens") or 0)
        routing = await charge_job(self.router, self.holds, row, trained)
        self.records.set(
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
        self.records.event(
            row["id"],
            "info",
            f"Job succeeded at {row['region']}: {trained} tokens trained, "
            f"{routing.cost_yuan:.4f} yuan ({routing.cash_yuan:.4f} in cash)",
        )
