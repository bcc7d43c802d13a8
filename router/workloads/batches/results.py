"""A batch's end: every line not run gets its error entry, then the output and error files are written."""

from __future__ import annotations

import uuid

from suanli.router.workloads.batches.table import BatchTable
from suanli.router.workloads.files import FileStore

__all__ = ["close_pending", "write_results"]


def close_pending(table: BatchTable, batch_id: str) -> None:
    """Answer every line that will not run now, then hand the batch to finalizing."""
    status = table.status(batch_id)
    cancelled = status == "cancelling"
    code, message = (
        ("batch_cancelled", "This request was not run: the batch was cancelled.")
        if cancelled
        else ("batch_expired", "This request could not be executed before the completion window expired.")
    )
    rows = table.db.rows(
        "SELECT line_no, custom_id FROM wl_batch_lines WHERE batch_id = ? AND state != 'done'",
        (batch_id,),
    )
    for row in rows:
        entry = {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": row["custom_id"],
            "response": None,
            "error": {"code": code, "message": message},
        }
        table.store(batch_id, row["line_no"], entry, None)
    final = "cancelled" if cancelled else ("expired" if rows else "completed")
    table.set_status(batch_id, "finalizing", "finalizing_at", outcome=final)


def write_results(table: BatchTable, files: FileStore, batch_id: str) -> None:
    """Write the output and error files in line order and give the batch its final status."""
    rows = table.db.rows(
        "SELECT ok, entry FROM wl_batch_lines WHERE batch_id = ? ORDER BY line_no", (batch_id,)
    )
    good = b"".join(r["entry"].encode() + b"\n" for r in rows if r["ok"])
    bad = b"".join(r["entry"].encode() + b"\n" for r in rows if not r["ok"])
    fields: dict[str, object] = {}
    batch = table.db.row("SELECT key_id FROM wl_batches WHERE id = ?", (batch_id,))
    owner = batch["key_id"] if batch else None  # the result files belong to the batch's key
    if good:
        fields["output_file_id"] = files.add(
            purpose="batch_output", filename=f"{batch_id}_output.jsonl", data=good, key_id=owner
        )["id"]
    if bad:
        fields["error_file_id"] = files.add(
            purpose="batch_output", filename=f"{batch_id}_error.jsonl", data=bad, key_id=owner
        )["id"]
    row = table.db.row("SELECT outcome FROM wl_batches WHERE id = ?", (batch_id,))
    final = (row or {}).get("outcome") or "completed"
    stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[final]
    table.set_status(batch_id, final, stamp, **fields)
