"""Cost in the answer: a settled request's price written into its ``usage`` (DESIGN.md, HTTP contract).

A non-streamed answer's ``usage`` gains ``cost_yuan`` (the settled cost, cash plus what the
voucher paid, exactly the ledger's ``cost_yuan``) and ``suanli: {region, voucher,
voucher_units, voucher_yuan, cash_yuan, list_yuan}``; a stream's usage chunk the same, once the
stream is settled. OpenAI SDKs keep unknown usage fields as extras, so clients built for OpenAI
keep working (OpenRouter puts ``usage.cost`` in the same place).
"""

from __future__ import annotations

import orjson

from suanli.router.core.results import Routing
from suanli.router.ledger.types import UsageRow

__all__ = ["held_usage_events", "request_record", "usage_cost", "with_cost", "with_cost_event"]

_USAGE = b'"usage"'


def usage_cost(routing: Routing) -> dict:
    """The fields a settled request adds to its ``usage``."""
    return {
        "cost_yuan": routing.cost_yuan,
        "suanli": {
            "request_id": routing.request_id,
            "region": routing.region,
            "voucher": routing.voucher,
            "voucher_units": routing.voucher_units,
            "voucher_yuan": routing.voucher_yuan,
            "cash_yuan": routing.cash_yuan,
            "list_yuan": routing.list_yuan,
        },
    }


def _enriched(data: object, routing: Routing) -> object:
    if not isinstance(data, dict):
        return data
    usage = data.get("usage")
    if not isinstance(usage, dict):
        # No usage from the upstream: the ledger billed our own count; say so in the answer.
        usage = {
            "prompt_tokens": routing.prompt_tokens,
            "completion_tokens": routing.completion_tokens,
            "total_tokens": routing.prompt_tokens + routing.completion_tokens,
        }
    data["usage"] = {**usage, **usage_cost(routing)}
    return data


def with_cost(raw: bytes, routing: Routing) -> bytes:
    """A whole JSON answer with its settled cost in ``usage`` (unchanged if it is not JSON)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return orjson.dumps(_enriched(data, routing))


def held_usage_events(chunk: bytes) -> tuple[bytes, list[bytes]]:
    """``(chunk without its usage events, the usage events)``: SSE events of one relayed chunk.

    A usage event is held back until the stream settles, so that it can carry the cost.
    """
    if _USAGE not in chunk:
        return chunk, []
    kept: list[bytes] = []
    held: list[bytes] = []
    for event in chunk.split(b"\n\n"):
        if not event:
            continue
        compact = event.replace(b" ", b"")
        is_usage = event.startswith(b"data: {") and _USAGE in event and b'"usage":null' not in compact
        (held if is_usage else kept).append(event + b"\n\n")
    return b"".join(kept), held


def with_cost_event(event: bytes, routing: Routing) -> bytes:
    """One ``data: {...}`` SSE event with the settled cost in its ``usage``."""
    body = event[event.index(b"{") :].rstrip(b"\r\n")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return event
    return b"data: " + orjson.dumps(_enriched(data, routing)) + b"\n\n"


def request_record(row: UsageRow) -> dict:
    """``GET /v1/requests/{id}``: one settled request as the ledger recorded it."""
    return {
        "id": row.request_id,
        "object": "suanli.request",
        "created": int(row.time.timestamp()),
        "settled_at": row.time.isoformat(),
        "key_id": row.key_id,
        "region": row.region,
        "model": row.model,
        "class": row.work_class,
        "origin": row.origin,
        "status": row.status,
        "attempts": row.attempts,
        "usage": {
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.prompt_tokens + row.completion_tokens,
            "tokens_billed": row.tokens,
            "cost_yuan": row.cost_yuan,
        },
        "cost_yuan": row.cost_yuan,
        "cash_yuan": row.cash_yuan,
        "voucher": row.voucher_id,
        "voucher_units": row.voucher_units,
        "voucher_yuan": row.voucher_yuan,
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "hash": row.hash,
    }
