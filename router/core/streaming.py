"""A streamed answer relayed to the client, settled when it ends (whole, cut or broken)."""

from __future__ import annotations

import logging
import time

from suanli.optimizer import Ask, Option
from suanli.providers import StreamReply, UpstreamBroken
from suanli.router.core.accounts import Accounts
from suanli.router.core.cost import held_usage_events, with_cost_event
from suanli.router.core.limits import Lease
from suanli.router.core.picking import RegionPicker
from suanli.router.core.results import CompletionStream, Routing, error_event
from suanli.router.ledger.types import Hold

__all__ = ["relay_stream"]

log = logging.getLogger("suanli.router")

_DONE = b"data: [DONE]\n\n"


def relay_stream(
    accounts: Accounts,
    picker: RegionPicker,
    reply: StreamReply,
    routing: Routing,
    hold: Hold,
    option: Option,
    ask: Ask,
    started: float,
    lease: Lease,
    wants_usage: bool = False,
) -> CompletionStream:
    """The client's stream of ``reply``: each chunk passed on, the hold settled once at its end."""
    done = False  # the upstream's [DONE] arrived: the answer is whole
    held: list[bytes] = []  # the usage event, sent once settled with its cost (wants_usage)

    async def finish(status: int = 200) -> None:
        if routing.settled:
            return
        if status == 200 and not done:
            status = 499  # closed early by the client (nginx's code): settled for what was consumed
        await reply.close()
        await accounts.settle(
            hold,
            option,
            ask,
            reply.usage,
            routing,
            latency_s=time.perf_counter() - started,
            ttft_s=reply.ttft_s,
            status=status,
        )
        total_s = time.perf_counter() - started if status == 200 else None
        picker.measured(routing, reply.ttft_s, total_s, lease)

    async def relay():
        nonlocal done
        try:
            async for chunk in reply.chunks:
                if wants_usage and chunk != _DONE:
                    chunk, usage_events = held_usage_events(chunk)
                    held.extend(usage_events)
                    if not chunk:
                        continue
                if chunk == _DONE:
                    done = True
                    picker.health.stream_ended(routing.region)
                    await finish()
                    if held:
                        yield b"".join(with_cost_event(event, routing) for event in held)
                    # An SSE comment: clients ignore it, curl users see the settled cost.
                    yield (
                        f": suanli cost_yuan={routing.cost_yuan:.6f} cash_yuan={routing.cash_yuan:.6f} "
                        f"voucher={routing.voucher or 'none'}\n\n"
                    ).encode()
                yield chunk
        except UpstreamBroken as exc:
            log.warning("stream from %s broke after the first byte: %s", routing.region, exc.message)
            # Its streams, not the region: whole answers may still go there (router/core/health.py).
            picker.health.stream_broke(routing.region, picker.clock().timestamp())
            await finish(status=502)
            yield error_event(f"the upstream stream from region {routing.region} broke: {exc.message}")

    return CompletionStream(routing, relay(), finish)
