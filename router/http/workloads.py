"""The batch and fine-tuning workloads wired into the HTTP app: routes, and a lifecycle after the Router's.

``install_workloads(app, router)`` registers ``/v1/files``, ``/v1/batches`` and
``/v1/fine_tuning/jobs``. On start-up (after the Router started: the ledger is open) it
opens the workload tables, then resumes every batch and job a previous process left
unfinished; on shut-down it stops them before the Router closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from suanli.router.core.router import Router
from suanli.router.http.batch_routes import batch_routes
from suanli.router.http.fine_tuning_routes import fine_tuning_routes
from suanli.router.workloads.batches.exec import BatchRunner
from suanli.router.workloads.db import WorkloadDB
from suanli.router.workloads.files import FileStore, file_routes
from suanli.router.workloads.fine_tuning.tuner import FineTuner

__all__ = ["WORKLOADS", "Workloads", "install_workloads"]


@dataclass(slots=True)
class Workloads:
    """The app's workload services; filled in when the app starts."""

    db: WorkloadDB | None = None
    files: FileStore | None = None
    batches: BatchRunner | None = None
    tuning: FineTuner | None = None

    def parts(self) -> tuple[WorkloadDB, FileStore, BatchRunner]:
        if self.db is None or self.files is None or self.batches is None:
            raise RuntimeError("the workload services are not started")
        return self.db, self.files, self.batches


WORKLOADS = web.AppKey("workloads", Workloads)


def install_workloads(app: web.Application, router: Router, *, poll_s: float = 0.5) -> None:
    """Register the workload routes on ``app`` and start/stop the services with it."""
    holder = app[WORKLOADS] = Workloads()

    async def lifecycle(app: web.Application):
        data_dir = Path(router.config.data_dir) if router.config.data_dir else None
        db = WorkloadDB(router.config.ledger.url, data_dir)
        holder.db = db
        holder.files = FileStore(db, router.clock)
        holder.batches = BatchRunner(router, db, holder.files, poll_s=poll_s)
        holder.tuning = FineTuner(router, db, holder.files)
        await holder.batches.start()
        await holder.tuning.start()
        yield
        await holder.tuning.stop()
        await holder.batches.stop()
        db.close()

    app.cleanup_ctx.append(lifecycle)
    file_routes(app, lambda request: request.app[WORKLOADS].parts()[1])
    batch_routes(app, lambda request: _runner_and_files(request.app[WORKLOADS]))
    fine_tuning_routes(app, lambda request: _tuner(request.app[WORKLOADS]))


def _runner_and_files(workloads: Workloads) -> tuple[BatchRunner, FileStore]:
    _, files, runner = workloads.parts()
    return runner, files


def _tuner(workloads: Workloads) -> FineTuner:
    if workloads.tuning is None:
        raise RuntimeError("the workload services are not started")
    return workloads.tuning
