"""Fine-tuning jobs and their events as rows of the workload DB, and as OpenAI's objects."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from suanli.router.errors import BadRequestError
from suanli.router.workloads.db import WorkloadDB
from suanli.router.workloads.files import not_found, owned, page

__all__ = ["JobRecords"]


class JobRecords:
    """Reads and updates ``wl_ft_jobs`` and ``wl_ft_events`` at the Router's clock."""

    def __init__(self, db: WorkloadDB, now_s: Callable[[], float]) -> None:
        self.db = db
        self.now_s = now_s

    def row(self, job_id: str) -> dict:
        row = self.db.row("SELECT * FROM wl_ft_jobs WHERE id = ?", (job_id,))
        if row is None:
            raise RuntimeError(f"fine-tuning job {job_id} vanished from the database")
        return row

    def set(self, job_id: str, **fields: object) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE wl_ft_jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def event(self, job_id: str, level: str, message: str) -> None:
        self.db.execute(
            "INSERT INTO wl_ft_events (job_id, created_at, level, message) VALUES (?, ?, ?, ?)",
            (job_id, int(self.now_s()), level, message),
        )

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


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequestError("limit must be an integer between 1 and 100", param="limit")
    return int(raw)
