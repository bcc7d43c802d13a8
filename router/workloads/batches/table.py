"""The rows of one batch and its lines in the workload DB, shared by the batch's stages."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson

from suanli.router.core.results import Routing
from suanli.router.errors import ApiError
from suanli.router.workloads.db import WorkloadDB

__all__ = ["BatchTable", "error_entry"]


class BatchTable:
    """Reads and updates ``wl_batches`` and ``wl_batch_lines`` at the Router's clock."""

    def __init__(self, db: WorkloadDB, now_s: Callable[[], float]) -> None:
        self.db = db
        self.now_s = now_s
        # (batch id, line) -> prompt tokens counted at planning, so a line's attempts never count
        # again; in memory only (after a restart a line is counted once more when it runs)
        self.prompt_tokens: dict[tuple[str, int], int] = {}

    def batch(self, batch_id: str) -> dict:
        row = self.db.row("SELECT * FROM wl_batches WHERE id = ?", (batch_id,))
        if row is None:
            raise RuntimeError(f"batch {batch_id} vanished from the database")
        return row

    def status(self, batch_id: str) -> str:
        row = self.db.row("SELECT status FROM wl_batches WHERE id = ?", (batch_id,))
        return row["status"] if row else "failed"

    def set_status(self, batch_id: str, status: str, stamp: str, **fields: object) -> None:
        now = int(self.now_s())
        with self.db.transaction() as c:
            times = orjson.loads(
                c.execute("SELECT times FROM wl_batches WHERE id = ?", (batch_id,)).fetchone()[0]
            )
            times.setdefault(stamp, now)
            sets = ", ".join(f"{name} = ?" for name in fields)
            c.execute(
                f"UPDATE wl_batches SET status = ?, times = ?{', ' + sets if sets else ''} WHERE id = ?",
                (status, orjson.dumps(times).decode(), *fields.values(), batch_id),
            )

    def store(self, batch_id: str, line_no: int, entry: dict, routing: Routing | None) -> None:
        """Keep a line's answer and mark it done in one statement: exactly once per ``custom_id``."""
        self.prompt_tokens.pop((batch_id, line_no), None)
        self.db.execute(
            "UPDATE wl_batch_lines SET state = 'done', ok = ?, entry = ?, ran_region = ?, ran_at = ?,"
            " cash_yuan = ?, cost_yuan = ? WHERE batch_id = ? AND line_no = ?",
            (
                1 if routing is not None else 0,
                orjson.dumps(entry).decode(),
                getattr(routing, "region", None),
                self.now_s(),
                getattr(routing, "cash_yuan", 0.0),
                getattr(routing, "cost_yuan", 0.0),
                batch_id,
                line_no,
            ),
        )


def error_entry(custom_id: str, request_id: str, exc: ApiError) -> dict:
    """The output line of a request answered with an error (it goes to the error file)."""
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": {"status_code": exc.status, "request_id": request_id, "body": body},
        "error": None,
    }
