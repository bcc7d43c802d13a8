"""A batch's validating stage: read its input file and plan every line; and its lines' recovery.

Every line becomes a row of ``wl_batch_lines``: ``pending`` at its planned region and
start, or already ``done`` with an error when it cannot be sent at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from suanli.optimizer import CapacityBook, minute_of
from suanli.providers.tokenizer import count_prompt_tokens
from suanli.router.core.keys import KeyPolicy, load_policy, within_regions
from suanli.router.core.router import Router
from suanli.router.core.validate import max_output_tokens, validate_body
from suanli.router.errors import ApiError, BadRequestError, ModelNotFoundError
from suanli.router.workloads.batches.offload import offload_lines
from suanli.router.workloads.batches.plan import LineAsk, Slot, latest_start_s, place_jobs
from suanli.router.workloads.batches.platform import endpoint_offloadable
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
    url = f"/v1/{batch['endpoint'].removeprefix('/v1/')}"
    now_s = table.now_s()
    latest = latest_start_s(batch["created_at"], batch["expires_at"] - batch["created_at"])
    # Reading, checking and token-counting every line is CPU work (a 30 MB line takes seconds):
    # a worker thread does it, so /health and other batches' lines keep their event loop.
    read = await asyncio.to_thread(
        _read_lines, router, path, url, batch_id, now_s, latest, router.config.max_body_bytes
    )
    if read.bad_urls:
        errors = {
            "object": "list",
            "data": [
                {
                    "code": "invalid_url",
                    "line": n,
                    "param": "url",
                    "message": f"line {n}: the url does not match the batch's endpoint {url}",
                }
                for n in read.bad_urls[:100]
            ],
        }
        table.set_status(batch_id, "failed", "failed_at", errors=orjson.dumps(errors).decode())
        return
    raw_lines, asks, early, pinned = read.items, read.asks, read.early, read.pinned
    table.prompt_tokens.update({(batch_id, a.key): int(a.input_tokens) for a in asks})
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
    # Lines a platform's own batch API runs cheaper leave the schedule (and free their room).
    platform = offload_lines(
        router.config,
        [a for a in asks if a.key not in pinned and endpoint_offloadable(url)],
        slots,
        window_s=batch["expires_at"] - batch["created_at"],
        allowed=key.allowed_regions if key else None,
    )
    for n, region in platform.items():
        slot = slots.pop(n)
        if slot.region is not None and slot.tokens:
            book.release(slot.region, minute_of(slot.start_s), slot.tokens)
        slots[n] = Slot(region, now_s, 0, None)
    rows = await asyncio.to_thread(_line_rows, raw_lines, early)  # a big body's JSON, off the loop too
    with table.db.transaction() as c:
        for n, (item, body_json, entry_json) in enumerate(rows):
            slot = slots.get(n)
            state = "done" if entry_json else ("platform" if n in platform else "pending")
            c.execute(
                "INSERT INTO wl_batch_lines (batch_id, line_no, custom_id, body, region, start_s, tokens,"
                " state, ok, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch_id,
                    n,
                    item["custom_id"],
                    body_json,
                    slot.region if slot else None,
                    slot.start_s if slot else now_s,
                    slot.tokens if slot else 0,
                    state,
                    0 if entry_json else None,
                    entry_json,
                ),
            )
            if slot is not None and slot.voucher is not None and state == "pending":
                router.accounts.promise(f"{batch_id}-{n}", slot.voucher, slot.voucher_units)
    status = table.status(batch_id)
    table.set_status(batch_id, "cancelling" if status == "cancelling" else "in_progress", "in_progress_at")


@dataclass(slots=True)
class _Read:
    """An input file's lines, checked and counted (``_read_lines``)."""

    items: list[dict]
    asks: list[LineAsk]
    early: dict[int, dict]  # line -> error entry of a request that cannot be sent at all
    pinned: set[int]  # lines that name REGION/MODEL
    bad_urls: list[int]  # 1-based lines whose url is not the batch's endpoint


def _read_lines(router: Router, path: Path, url: str, batch_id: str, now_s: float, latest: float,
                max_body_bytes: int) -> _Read:
    """Parse, check and count every line of a batch input file (in a worker thread)."""
    items: list[dict] = []
    sizes: list[int] = []
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            items.append(orjson.loads(raw))
            sizes.append(len(raw))
    bad = [n for n, item in enumerate(items, 1) if item.get("url") != url]
    read = _Read(items, [], {}, set(), bad)
    if bad:
        return read
    endpoint = url.removeprefix("/v1/")
    for n, item in enumerate(items):
        body = item["body"]
        try:
            if sizes[n] > max_body_bytes:
                # The same request sent over HTTP would be refused (413): so is the line, alone.
                raise BadRequestError(
                    f"this line is {sizes[n]} bytes, over the {max_body_bytes}-byte request limit"
                    " (max_body_bytes); split it", param="body", code="request_too_large", status=413)
            body = validate_body(endpoint, body)
            if body.get("stream"):
                raise BadRequestError("stream is not supported in a batch", param="stream")
            model = public_model(router, body["model"])
        except ApiError as exc:
            read.early[n] = error_entry(item["custom_id"], f"{batch_id}-{n}", exc)
            continue
        if "/" in body["model"]:
            read.pinned.add(n)
        output = (
            0
            if endpoint == "embeddings"
            else min(max_output_tokens(endpoint, body, _EXPECTED_OUTPUT), _EXPECTED_OUTPUT * 10)
        )
        read.asks.append(LineAsk(n, model, count_prompt_tokens(endpoint, body), output, now_s, latest))
    return read


def _line_rows(items: list[dict], early: dict[int, dict]) -> list[tuple[dict, str, str | None]]:
    """Each line with its body and its early error entry, as the JSON the table stores."""
    out = []
    for n, item in enumerate(items):
        entry = early.get(n)
        if entry is None:
            out.append((item, orjson.dumps(item["body"]).decode(), None))
        else:  # never sent: its body is not kept (it may be the oversize one)
            out.append((item, "{}", orjson.dumps(entry).decode()))
    return out


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
