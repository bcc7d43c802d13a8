"""What the Router hands back: the answer plus the record of where it went and what it cost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field

import orjson

from suanli.router.ledger.types import VoucherStatus

__all__ = ["Completion", "CompletionStream", "Routing", "error_event", "voucher_dict"]


@dataclass(slots=True)
class Routing:
    """Where a request went and what it cost. For a stream, the cost fields are final once it ends."""

    request_id: str
    region: str
    model: str
    work_class: str
    origin: str
    voucher: str | None
    cash_yuan: float
    cost_yuan: float
    voucher_yuan: float = 0.0
    voucher_units: float = 0.0
    list_yuan: float = 0.0  # the cost at list price, before an off-peak discount
    attempts: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, billed at the cached input price (a prompt-cache hit)
    cache_saved_yuan: float = 0.0  # what the hit saved against the full input price
    settled: bool = False
    booked: bool = False  # RequestContext.booked: the forecast counted it when it was booked

    def headers(self) -> dict[str, str]:
        """The X-Suanli-* answer headers of DESIGN.md."""
        return {
            "X-Suanli-Region": self.region,
            "X-Suanli-Voucher": self.voucher or "none",
            "X-Suanli-Cost-Yuan": f"{self.cash_yuan:.6f}",
            "X-Suanli-Attempts": str(self.attempts),
            "X-Request-Id": self.request_id,
        }


@dataclass(slots=True)
class Completion:
    """A whole answer: the upstream JSON (``raw``) and its routing record."""

    raw: bytes
    routing: Routing

    def json(self) -> dict:
        return orjson.loads(self.raw)


@dataclass(slots=True)
class CompletionStream:
    """A streamed answer. Iterate it for chunk dicts (SDK) or ``raw()`` for SSE bytes (HTTP).

    The usage is settled on the ledger when the stream ends, breaks, or is closed early.
    """

    routing: Routing
    _chunks: AsyncIterator[bytes]
    _finish: Callable[[], Awaitable[None]]
    _closed: bool = field(default=False)

    async def raw(self) -> AsyncIterator[bytes]:
        """SSE events exactly as relayed, ending with ``data: [DONE]``; a chunk may hold several."""
        try:
            async for chunk in self._chunks:
                yield chunk
        finally:
            await self.aclose()

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._dicts()

    async def _dicts(self) -> AsyncIterator[dict]:
        async for chunk in self.raw():
            for event in chunk.split(b"\n\n"):  # a chunk holds one or more whole events
                if event.startswith(b"data: {"):
                    yield orjson.loads(event[6:])

    async def aclose(self) -> None:
        """Stop early: cancels the upstream call and settles what was consumed."""
        if self._closed:
            return
        self._closed = True
        await self._finish()

    async def __aenter__(self) -> CompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def voucher_dict(status: VoucherStatus) -> dict:
    """A VoucherStatus as JSON-ready data (times in ISO 8601)."""
    row = asdict(status)
    for name in ("valid_from", "expires"):
        row[name] = row[name].isoformat() if row[name] else None
    return row


def error_event(message: str) -> bytes:
    """The SSE event that ends a stream whose upstream broke after its first byte."""
    payload = {
        "error": {"message": message, "type": "server_error", "param": None, "code": "upstream_broken"}
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"
