"""A batch's validating stage: read its input file and plan every line; and its lines' recovery.

Every line becomes a row of ``wl_batch_lines``: ``pending`` at its planned region and
start, or already ``done`` with an error when it cannot be sent at all.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson

from suanli.optimizer import CapacityBook, minute_of
from suanli.providers.tokenizer import count_prompt_tokens
from suanli.router.core.keys import KeyPolicy, load_policy, within_regions
from suanli.router.core.router import Router
from suanli.router.core.validate import max_output_tokens, validate_body
from suanli.router.errors import ApiError, BadRequestError, ModelNotFoundError
from suanli.router.workloads.batches.plan import LineAsk, latest_start_s, place_jobs
from suanli.router.workloads.batches.table import BatchTable, error_entry
from suanli.router.workloads.files import FileStore

__all__ = ["public_model", "recover_lines", "validate_and_plan"]

_EXPECTED_OUTPUT = 300  # reference output tokens planned for a line without max_tokens


async def validate_and_plan(
    router: Router,
    table: BatchTable,
    files: FileStore,
    book: CapacityBook,
    batch_id: str,
    key: KeyPolicy | None,
) -> None:
    """Check the input file's lines, place them, record them, and move the batch to in_progress.

    ``key`` is the policy of the key that created the batch when this process knows it; else
    it is read back from the key id kept with the batch.
    """
    batch = table.batch(batch_id)
    path = files.path(batch["input_file_id"])
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
        table.set_status(batch_id, "failed", "failed_at", errors=orjson.dumps(errors).decode())
        return
    endpoint = url.removeprefix("/v1/")
    now_s = table.now_s()
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
            model = public_model(router, body["model"])
        except ApiError as exc:
            early[n] = error_entry(item["custom_id"], f"{batch_id}-{n}", exc)
            continue
        if "/" in body["model"]:
            pinned.add(n)
        output = (
            0
            if endpoint == "embeddings"
            else min(max_output_tokens(endpoint, body, _EXPECTED_OUTPUT), _EXPECTED_OUTPUT * 10)
        )
        asks.append(LineAsk(n, model, count_prompt_tokens(endpoint, body), output, now_s, latest))
    key = key or await load_policy(router.accounts.ledger.port, router.config, batch["key_id"])
    for ask in asks:
        # Demand that may wait, as simulate's forecast sees it: known now, due by its window's
        # end. Its lines are not counted again when they run (RequestContext.booked).
        router.planning.observe(("batch", batch["origin"], ask.model), input_tokens=ask.input_tokens,
                                output_tokens=ask.output_tokens, at_s=now_s, window_s=latest - now_s)
    if asks:
        router.planning.poke("batch")
    slots = await asyncio.to_thread(
        place_jobs,
        # A virtual key's batch is planned within the regions it may use.
        within_regions(router.config, key.allowed_regions if key else None),
        [a for a in asks if a.key not in pinned],
        work_class="batch",
        origin=batch["origin"],
        now_s=now_s,
        book=book,
        balances=router.balances(),
        # the live plan prices the whole config; a key confined to some regions plans alone
        live_plan=None if key and key.allowed_regions else router.planning.plan,
    )
    with table.db.transaction() as c:
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
            if slot is not None and slot.voucher is not None and entry is None:
                router.accounts.promise(f"{batch_id}-{n}", slot.voucher, slot.voucher_units)
    status = table.status(batch_id)
    table.set_status(batch_id, "cancelling" if status == "cancelling" else "in_progress", "in_progress_at")


def public_model(router: Router, name: str) -> str:
    """The public model of ``name`` (``MODEL`` or ``REGION/MODEL``); 404 when nobody serves it."""
    config = router.config
    region_id, sep, model = name.partition("/")
    region = config.region(region_id) if sep else None
    if region is not None and region.offer(model) is not None:
        return model
    if name in config.model_names():
        return name
    raise ModelNotFoundError(f"the model {name!r} does not exist or no region offers it")


async def recover_lines(router: Router, table: BatchTable, book: CapacityBook, batch_id: str) -> None:
    """Lines left running by a dead process: done if the ledger settled them, else pending again.

    The lines still pending then take their room in ``book`` again, so new batches plan around them.
    """
    running = table.db.rows(
        "SELECT line_no, custom_id FROM wl_batch_lines WHERE batch_id = ? AND state = 'running'",
        (batch_id,),
    )
    settled: set[str] = set()
    if running:
        created = datetime.fromtimestamp(table.batch(batch_id)["created_at"] - 1, UTC)
        # A worker thread: the PostgreSQL ledger's blocking reads may not run on the loop.
        rows = await asyncio.to_thread(router.accounts.ledger.blocking.usage, since=created)
        settled = {row.request_id for row in rows if row.request_id.startswith(f"{batch_id}-")}
    for line in running:
        request_id = f"{batch_id}-{line['line_no']}"
        if request_id not in settled:
            table.db.execute(
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
        table.store(batch_id, line["line_no"], error_entry(line["custom_id"], request_id, lost), None)
    for row in table.db.rows(
        "SELECT region, start_s, tokens FROM wl_batch_lines WHERE batch_id = ? AND state = 'pending'"
        " AND region IS NOT NULL",
        (batch_id,),
    ):
        book.add(row["region"], minute_of(row["start_s"]), row["tokens"])
