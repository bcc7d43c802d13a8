"""The batch executor: validate, plan, run each line at its planned start, write the result files.

Status lifecycle (OpenAI's): validating -> in_progress -> finalizing -> completed, or
failed (a bad input), expired (the window closed first), cancelling -> cancelled.

Exactly once per ``custom_id``: every line is a row of ``wl_batch_lines`` that goes
pending -> running -> done, and its answer is stored in the same transaction that marks
it done. After a restart a line found ``running`` is checked against the ledger: with a
settled usage row for its request id it ran (and was charged) but the answer was lost
with the process, so it is answered with a ``response_lost`` error rather than run and
charged twice; without one it goes back to pending and runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from optimizer import CapacityBook, minute_of
from providers.tokenizer import count_prompt_tokens
from router.batch_plan import LineAsk, latest_start_s, place_jobs
from router.clocks import clock_speed
from router.core import RequestContext, Router
from router.errors import ApiError, BadRequestError, ModelNotFoundError
from router.files import FileStore
from router.keys import KeyPolicy, load_policy, within_regions
from router.results import Completion
from router.validate import max_output_tokens, validate_body
from router.workload_db import WorkloadDB

__all__ = ["BatchRunner"]

log = logging.getLogger("suanli.batch")

_EXPECTED_OUTPUT = 300  # reference output tokens planned for a line without max_tokens
_RETRY_UNPINNED = frozenset({429, 502, 503, 504})
_MAX_IN_FLIGHT = 64  # lines of one batch running at once
_DRAIN_S = 15.0  # how long a stop waits for the lines already running
_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True, slots=True)
class _Line:
    batch_id: str
    line_no: int
    custom_id: str
    body: dict
    region: str | None


class BatchRunner:
    """Runs every active batch in the background of the app; survives restarts through the DB."""

    def __init__(self, router: Router, db: WorkloadDB, files: FileStore, *, poll_s: float = 0.5) -> None:
        self.router = router
        self.db = db
        self.files = files
        self.poll_s = poll_s
        self.book = CapacityBook(router.config)
        self._tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self._keys: dict[str, KeyPolicy] = {}  # batch id -> the virtual key that created it (this process)
        self._semaphores = {
            r.id: asyncio.Semaphore(r.limits.concurrency or 16) for r in router.config.regions
        }

    def now_s(self) -> float:
        return self.router.clock().timestamp()

    async def start(self) -> None:
        """Resume every batch left active by a previous process."""
        for row in self.db.rows("SELECT id FROM wl_batches WHERE status IN (?, ?, ?, ?)", _ACTIVE):
            await self._recover_lines(row["id"])
            self.submit(row["id"])

    async def stop(self) -> None:
        """Take no new line, let the lines running finish (up to ``_DRAIN_S``), then stop.

        Cancelling a line mid-request could cut it after the ledger settled it and before its
        answer is kept; draining first keeps that to a crash's window.
        """
        self._stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=_DRAIN_S)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def submit(self, batch_id: str, key: KeyPolicy | None = None) -> None:
        """Start (or resume) the task of one batch; ``key``'s budget and regions apply to its lines.

        After a restart only the key id is known (kept with the batch), not its policy.
        """
        if key is not None:
            self._keys[batch_id] = key
        if batch_id in self._tasks and not self._tasks[batch_id].done():
            return
        task = asyncio.get_running_loop().create_task(self._run(batch_id), name=f"batch {batch_id}")
        self._tasks[batch_id] = task

    def cancel(self, batch_id: str) -> None:
        """Mark a batch cancelling; its task notices at its next step."""
        self._set_status(batch_id, "cancelling", "cancelling_at")

    async def _run(self, batch_id: str) -> None:
        try:
            status = self._status(batch_id)
            if status == "validating":
                await self._validate_and_plan(batch_id)
            if self._status(batch_id) in ("in_progress", "cancelling"):
                await self._execute(batch_id)
            if self._status(batch_id) == "finalizing":
                self._finalize(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a batch's failure must not take the app down; it is logged
            log.exception("batch %s failed", batch_id)
            self._set_status(batch_id, "failed", "failed_at")

    def _batch(self, batch_id: str) -> dict:
        row = self.db.row("SELECT * FROM wl_batches WHERE id = ?", (batch_id,))
        if row is None:
            raise RuntimeError(f"batch {batch_id} vanished from the database")
        return row

    def _status(self, batch_id: str) -> str:
        row = self.db.row("SELECT status FROM wl_batches WHERE id = ?", (batch_id,))
        return row["status"] if row else "failed"

    def _set_status(self, batch_id: str, status: str, stamp: str, **fields: object) -> None:
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

    # -- validating: read the file, plan every line ---------------------------------------

    async def _validate_and_plan(self, batch_id: str) -> None:
        batch = self._batch(batch_id)
        path = self.files.path(batch["input_file_id"])
        raw_lines = [orjson.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]
        url = f"/v1/{batch['endpoint'].removeprefix('/v1/')}"
        bad = [n for n, item in enumerate(raw_lines, 1) if item.get("url") != url]
        if bad:
            errors = {
                "object": "list",
                "data": [
                    {
                        "code": "invalid_url",
                        "line": n,
                        "param": "url",
                        "message": f"line {n}: the url does not match the batch's endpoint {url}",
                    }
                    for n in bad[:100]
                ],
            }
            self._set_status(batch_id, "failed", "failed_at", errors=orjson.dumps(errors).decode())
            return
        endpoint = url.removeprefix("/v1/")
        now_s = self.now_s()
        latest = latest_start_s(batch["created_at"], batch["expires_at"] - batch["created_at"])
        asks: list[LineAsk] = []
        early: dict[int, dict] = {}  # line -> error entry of a request that cannot be sent at all
        pinned: set[int] = set()
        for n, item in enumerate(raw_lines):
            body = item["body"]
            try:
                body = validate_body(endpoint, body)
                if body.get("stream"):
                    raise BadRequestError("stream is not supported in a batch", param="stream")
                model = self._model(body["model"])
            except ApiError as exc:
                early[n] = _error_entry(item["custom_id"], f"{batch_id}-{n}", exc)
                continue
            if "/" in body["model"]:
                pinned.add(n)
            output = (
                0
                if endpoint == "embeddings"
                else min(max_output_tokens(endpoint, body, _EXPECTED_OUTPUT), _EXPECTED_OUTPUT * 10)
            )
            asks.append(LineAsk(n, model, count_prompt_tokens(endpoint, body), output, now_s, latest))
        key = self._keys.get(batch_id) or await load_policy(
            self.router.ledger, self.router.config, batch["key_id"]
        )
        slots = await asyncio.to_thread(
            place_jobs,
            # A virtual key's batch is planned within the regions it may use.
            within_regions(self.router.config, key.allowed_regions if key else None),
            [a for a in asks if a.key not in pinned],
            work_class="batch",
            origin=batch["origin"],
            now_s=now_s,
            book=self.book,
            balances=self.router.balances(),
        )
        with self.db.transaction() as c:
            for n, item in enumerate(raw_lines):
                slot = slots.get(n)
                entry = early.get(n)
                c.execute(
                    "INSERT INTO wl_batch_lines (batch_id, line_no, custom_id, body, region, start_s, tokens,"
                    " state, ok, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        batch_id,
                        n,
                        item["custom_id"],
                        orjson.dumps(item["body"]).decode(),
                        slot.region if slot else None,
                        slot.start_s if slot else now_s,
                        slot.tokens if slot else 0,
                        "done" if entry else "pending",
                        0 if entry else None,
                        orjson.dumps(entry).decode() if entry else None,
                    ),
                )
        status = self._status(batch_id)
        self._set_status(
            batch_id, "cancelling" if status == "cancelling" else "in_progress", "in_progress_at"
        )

    def _model(self, name: str) -> str:
        """The public model of ``name`` (``MODEL`` or ``REGION/MODEL``); 404 when nobody serves it."""
        config = self.router.config
        region_id, sep, model = name.partition("/")
        region = config.region(region_id) if sep else None
        if region is not None and region.offer(model) is not None:
            return model
        if name in config.model_names():
            return name
        raise ModelNotFoundError(f"the model {name!r} does not exist or no region offers it")

    async def _recover_lines(self, batch_id: str) -> None:
        """Lines left running by a dead process: done if the ledger settled them, else pending again."""
        running = self.db.rows(
            "SELECT line_no, custom_id FROM wl_batch_lines WHERE batch_id = ? AND state = 'running'",
            (batch_id,),
        )
        settled: set[str] = set()
        if running:
            created = datetime.fromtimestamp(self._batch(batch_id)["created_at"] - 1, UTC)
            # A worker thread: the PostgreSQL ledger's blocking reads may not run on the loop.
            rows = await asyncio.to_thread(self.router.ledger.usage, since=created)  # type: ignore[union-attr]
            settled = {row.request_id for row in rows if row.request_id.startswith(f"{batch_id}-")}
        for line in running:
            request_id = f"{batch_id}-{line['line_no']}"
            if request_id not in settled:
                self.db.execute(
                    "UPDATE wl_batch_lines SET state = 'pending' WHERE batch_id = ? AND line_no = ?",
                    (batch_id, line["line_no"]),
                )
                continue
            lost = BadRequestError(
                "the request ran and was charged, but its answer was lost when suanli stopped;"
                " it was not run again",
                code="response_lost",
                status=500,
            )
            self._store(batch_id, line["line_no"], _error_entry(line["custom_id"], request_id, lost), None)
        for row in self.db.rows(
            "SELECT region, start_s, tokens FROM wl_batch_lines WHERE batch_id = ? AND state = 'pending'"
            " AND region IS NOT NULL",
            (batch_id,),
        ):
            self.book.add(row["region"], minute_of(row["start_s"]), row["tokens"])

    # -- in_progress: run lines when their start comes ------------------------------------

    async def _execute(self, batch_id: str) -> None:
        batch = self._batch(batch_id)
        endpoint = batch["endpoint"].removeprefix("/v1/")
        in_flight: set[asyncio.Task] = set()
        try:
            while True:
                status = self._status(batch_id)
                now_s = self.now_s()
                if status == "cancelling" or now_s >= batch["expires_at"] or self._stopping:
                    break
                room = _MAX_IN_FLIGHT - len(in_flight)
                due = self._take_due(batch_id, now_s, room) if room > 0 else []
                for line in due:
                    in_flight.add(asyncio.create_task(self._run_line(batch, endpoint, line)))
                if not in_flight and not due:
                    upcoming = self.db.row(
                        "SELECT MIN(start_s) AS s FROM wl_batch_lines"
                        " WHERE batch_id = ? AND state = 'pending'",
                        (batch_id,),
                    )
                    if upcoming is None or upcoming["s"] is None:
                        break
                    wait_s = self._real_wait(upcoming["s"] - now_s)
                else:
                    wait_s = self._real_wait(self.poll_s) if room > len(due) else self.poll_s
                if in_flight:
                    done, in_flight = await asyncio.wait(
                        in_flight, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    in_flight = set(in_flight)
                else:
                    await asyncio.sleep(wait_s)
            if in_flight:
                await asyncio.gather(*in_flight)
        except BaseException:
            for task in in_flight:
                task.cancel()
            raise
        if not self._stopping:
            self._close_pending(batch_id)

    def _real_wait(self, virtual_s: float) -> float:
        speed = clock_speed(self.router.clock)
        if speed <= 0:
            return min(self.poll_s, 0.02)
        return min(max(virtual_s / speed, 0.0), self.poll_s)

    def _take_due(self, batch_id: str, now_s: float, room: int) -> list[_Line]:
        with self.db.transaction() as c:
            rows = c.execute(
                "SELECT line_no, custom_id, body, region FROM wl_batch_lines WHERE batch_id = ?"
                " AND state = 'pending' AND start_s <= ? ORDER BY start_s, line_no LIMIT ?",
                (batch_id, now_s, room),
            ).fetchall()
            c.executemany(
                "UPDATE wl_batch_lines SET state = 'running' WHERE batch_id = ? AND line_no = ?",
                [(batch_id, r[0]) for r in rows],
            )
        return [_Line(batch_id, r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]

    async def _run_line(self, batch: dict, endpoint: str, line: _Line) -> None:
        request_id = f"{line.batch_id}-{line.line_no}"
        # After a restart the policy is read back from the stored key, so it still binds.
        key = self._keys.get(line.batch_id) or await load_policy(
            self.router.ledger, self.router.config, batch["key_id"]
        )
        ctx = RequestContext(
            work_class="batch",
            origin=batch["origin"],
            request_id=request_id,
            key_id=batch["key_id"],
            allowed_regions=key.allowed_regions if key else None,
            key=key,
        )
        body = line.body
        semaphore = self._semaphores.get(line.region or "", None)
        started = time.perf_counter()
        try:
            # A line planned outside the key's regions is routed afresh, within them.
            allowed = key is None or key.allowed_regions is None or line.region in key.allowed_regions
            if line.region and allowed and "/" not in body["model"]:
                try:
                    async with semaphore or _NULL:
                        result = await self.router.handle(
                            endpoint, {**body, "model": f"{line.region}/{body['model']}"}, ctx
                        )
                except ApiError as exc:
                    if exc.status not in _RETRY_UNPINNED:
                        raise
                    if exc.status == 429 and self._requeue(batch, line, exc.retry_after_s):
                        return
                    # The planned region is down (or throttling to the end): any region, now.
                    log.info(
                        "batch line %s: %s failed (%s), trying any region",
                        request_id,
                        line.region,
                        exc.status,
                    )
                    result = await self.router.handle(endpoint, body, ctx)
            else:
                result = await self.router.handle(endpoint, body, ctx)
        except ApiError as exc:
            self._store(line.batch_id, line.line_no, _error_entry(line.custom_id, request_id, exc), None)
            return
        if not isinstance(result, Completion):  # stream was refused at validation
            raise RuntimeError("a batch line was answered as a stream")
        routing = result.routing
        entry = {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": line.custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": result.json()},
            "error": None,
        }
        log.debug(
            "batch line %s ran at %s in %.3f s", request_id, routing.region, time.perf_counter() - started
        )
        self._store(line.batch_id, line.line_no, entry, routing)

    def _requeue(self, batch: dict, line: _Line, retry_after_s: float | None) -> bool:
        """A throttled line waits at its cheap region rather than moving now; False when time is short."""
        retry_s = self.now_s() + max(retry_after_s or 1.0, 1.0)
        window_s = batch["expires_at"] - batch["created_at"]
        if retry_s > latest_start_s(batch["created_at"], window_s):
            return False
        self.db.execute(
            "UPDATE wl_batch_lines SET state = 'pending', start_s = ? WHERE batch_id = ? AND line_no = ?",
            (retry_s, line.batch_id, line.line_no),
        )
        return True

    def _store(self, batch_id: str, line_no: int, entry: dict, routing: object | None) -> None:
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

    def _close_pending(self, batch_id: str) -> None:
        """Answer every line that will not run now, then hand the batch to finalizing."""
        status = self._status(batch_id)
        cancelled = status == "cancelling"
        code, message = (
            ("batch_cancelled", "This request was not run: the batch was cancelled.")
            if cancelled
            else ("batch_expired", "This request could not be executed before the completion window expired.")
        )
        rows = self.db.rows(
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
            self._store(batch_id, row["line_no"], entry, None)
        final = "cancelled" if cancelled else ("expired" if rows else "completed")
        self._set_status(batch_id, "finalizing", "finalizing_at", outcome=final)

    # -- finalizing: the output and error files --------------------------------------------

    def _finalize(self, batch_id: str) -> None:
        rows = self.db.rows(
            "SELECT ok, entry FROM wl_batch_lines WHERE batch_id = ? ORDER BY line_no", (batch_id,)
        )
        good = b"".join(r["entry"].encode() + b"\n" for r in rows if r["ok"])
        bad = b"".join(r["entry"].encode() + b"\n" for r in rows if not r["ok"])
        fields: dict[str, object] = {}
        batch = self.db.row("SELECT key_id FROM wl_batches WHERE id = ?", (batch_id,))
        owner = batch["key_id"] if batch else None  # the result files belong to the batch's key
        if good:
            fields["output_file_id"] = self.files.add(
                purpose="batch_output", filename=f"{batch_id}_output.jsonl", data=good, key_id=owner
            )["id"]
        if bad:
            fields["error_file_id"] = self.files.add(
                purpose="batch_output", filename=f"{batch_id}_error.jsonl", data=bad, key_id=owner
            )["id"]
        row = self.db.row("SELECT outcome FROM wl_batches WHERE id = ?", (batch_id,))
        final = (row or {}).get("outcome") or "completed"
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[final]
        self._set_status(batch_id, final, stamp, **fields)


class _NullLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NULL = _NullLock()


def _error_entry(custom_id: str, request_id: str, exc: ApiError) -> dict:
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": {"status_code": exc.status, "request_id": request_id, "body": body},
        "error": None,
    }
