"""Lines a platform's own batch API runs: sent once per (batch, region), collected once, billed its price.

Each line is answered exactly once across restarts:

- a *part* (one per batch and region) is written ``submitting`` with its id before anything
  is sent; the platform batch carries that id as ``metadata.suanli_part``, and its batch id is
  persisted (``submitted``) as soon as the platform answers;
- on start, a part still ``submitting`` is looked for among the platform's batches by that
  metadata: found, it is adopted; not found, nothing was created and it is submitted again;
- a part is marked ``collecting`` before its first line is charged; each line is then held
  and settled on the ledger at the batch price and its answer stored. A part found
  ``collecting`` by a later process checks each line's request id on the ledger first: a line
  already settled (the crash fell between the charge and the store) is stored uncharged.

A line is paid as a live request would be: by a voucher of the region that covers it (and is
worth more there than the plan's price of the units), else cash, at the batch price. A line the
platform's output does not mention goes back to the schedule and runs here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

import aiohttp
import orjson

from suanli.config import Offer, Region, Voucher
from suanli.optimizer import Ask, Charge, Option, voucher_pays, voucher_usable
from suanli.providers import UpstreamError, Usage
from suanli.providers.batch_client import PlatformBatchClient
from suanli.router.core.context import RequestContext
from suanli.router.core.keys import KeyPolicy, load_policy
from suanli.router.core.results import Routing
from suanli.router.core.router import Router
from suanli.router.errors import ApiError
from suanli.router.workloads.batches.offload import batch_price_yuan
from suanli.router.workloads.batches.table import BatchTable, error_entry

__all__ = ["PlatformBatches", "endpoint_offloadable"]

log = logging.getLogger("suanli.batch")

_TABLE = """
CREATE TABLE IF NOT EXISTS wl_platform_batches (
    id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    region TEXT NOT NULL,
    state TEXT NOT NULL,
    platform_batch_id TEXT,
    created_at REAL NOT NULL
)"""


def endpoint_offloadable(url: str) -> bool:
    """Whether lines of a batch for ``url`` may go to a platform's batch API (chat only)."""
    return url == "/v1/chat/completions"


class PlatformBatches:
    """Submits, follows and collects the platform parts of every batch; one per BatchRunner."""

    def __init__(self, router: Router, table: BatchTable) -> None:
        self.router = router
        self.table = table
        self.db = table.db
        self.db.execute(_TABLE)
        self._session: aiohttp.ClientSession | None = None
        self._client: PlatformBatchClient | None = None
        self._resumed: set[str] = set()  # parts this process has looked for on their platform

    def _api(self) -> PlatformBatchClient:
        if self._client is None:
            self._session = aiohttp.ClientSession()
            self._client = PlatformBatchClient(self._session)
        return self._client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = self._client = None

    def waiting(self, batch_id: str) -> bool:
        """Whether some line of the batch waits on a platform."""
        row = self.db.row(
            "SELECT 1 AS x FROM wl_batch_lines WHERE batch_id = ? AND state = 'platform' LIMIT 1", (batch_id,)
        )
        return row is not None

    async def advance(self, batch: dict, key: KeyPolicy | None) -> None:
        """Submit what is not yet submitted, collect what the platforms finished."""
        batch_id = batch["id"]
        regions = [
            r["region"]
            for r in self.db.rows(
                "SELECT DISTINCT region FROM wl_batch_lines WHERE batch_id = ? AND state = 'platform'",
                (batch_id,),
            )
        ]
        for region_id in regions:
            part_id = f"{batch_id}-p-{region_id}"
            part = self.db.row("SELECT * FROM wl_platform_batches WHERE id = ?", (part_id,))
            try:
                if part is None or part["state"] == "submitting":
                    await self._submit(batch, region_id, part_id, found=part is not None)
                    continue
                await self._follow(batch, part, key)
            except UpstreamError as exc:  # the platform is down or refuses: tried again next round
                log.warning("platform batch %s at %s: %s", part_id, region_id, exc.message)

    def _region(self, region_id: str) -> tuple[Region, str]:
        region = self.router.config.region(region_id)
        base = self.router.base_url(region_id)
        if region is None or base is None:
            raise UpstreamError(region_id, 0, "the region has no base URL", retryable=True)
        return region, base

    async def _submit(self, batch: dict, region_id: str, part_id: str, *, found: bool) -> None:
        region, base = self._region(region_id)
        api = self._api()
        if found and part_id not in self._resumed:
            # A previous process wrote the part and may have created the platform batch.
            self._resumed.add(part_id)
            for existing in await api.list(region, base):
                if (existing.get("metadata") or {}).get("suanli_part") == part_id:
                    self._submitted(part_id, str(existing["id"]))
                    return
        if not found:
            self.db.execute(
                "INSERT INTO wl_platform_batches (id, batch_id, region, state, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (part_id, batch["id"], region_id, "submitting", self.table.now_s()),
            )
            self._resumed.add(part_id)
        lines = self.db.rows(
            "SELECT line_no, custom_id, body FROM wl_batch_lines WHERE batch_id = ? AND state = 'platform'"
            " AND region = ? ORDER BY line_no",
            (batch["id"], region_id),
        )
        upstream = region.offer  # public model -> the platform's name
        data = b"".join(_line(row, upstream) + b"\n" for row in lines)
        uploaded = await api.upload(region, base, data, f"{part_id}.jsonl")
        window_h = region.batch_api.window_h if region.batch_api else 24.0
        created = await api.create(
            region,
            base,
            {
                "input_file_id": uploaded["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": f"{window_h:g}h",
                "metadata": {"suanli_part": part_id},
            },
        )
        self._submitted(part_id, str(created["id"]))
        log.info("batch %s: %d lines sent to %s's batch API (%s)", batch["id"], len(lines), region_id,
                 created["id"])

    def _voucher_options(
        self, region: Region, offer: Offer, model: str, tokens: int, price: float, factor: float
    ) -> list[Option]:
        plan = self.router.planning.plan
        return _paying(
            self.router.config.vouchers, self.router.accounts.free(), plan.voucher_price if plan else {},
            region=region, offer=offer, model=model, tokens=tokens, price=price, factor=factor,
            at=self.router.clock(),
        )

    def _submitted(self, part_id: str, platform_batch_id: str) -> None:
        self.db.execute(
            "UPDATE wl_platform_batches SET state = 'submitted', platform_batch_id = ? WHERE id = ?",
            (platform_batch_id, part_id),
        )

    async def _follow(self, batch: dict, part: dict, key: KeyPolicy | None) -> None:
        region, base = self._region(part["region"])
        api = self._api()
        info = await api.retrieve(region, base, part["platform_batch_id"])
        status = info.get("status")
        if status not in ("completed", "failed", "expired", "cancelled"):
            return
        entries: dict[str, dict] = {}  # custom_id -> the platform's output line
        for name in ("output_file_id", "error_file_id"):
            if info.get(name):
                for raw in (await api.content(region, base, str(info[name]))).splitlines():
                    if raw.strip():
                        item = orjson.loads(raw)
                        entries[str(item.get("custom_id"))] = item
        recheck = part["state"] == "collecting"
        self.db.execute("UPDATE wl_platform_batches SET state = 'collecting' WHERE id = ?", (part["id"],))
        key = key or await load_policy(self.router.accounts.ledger.port, self.router.config, batch["key_id"])
        lines = self.db.rows(
            "SELECT line_no, custom_id, body FROM wl_batch_lines WHERE batch_id = ? AND state = 'platform'"
            " AND region = ? ORDER BY line_no",
            (batch["id"], region.id),
        )
        for row in lines:
            entry = entries.get(row["custom_id"])
            if entry is None:  # not run there: it runs here, now
                self.db.execute(
                    "UPDATE wl_batch_lines SET state = 'pending', region = NULL, start_s = ?"
                    " WHERE batch_id = ? AND line_no = ?",
                    (self.table.now_s(), batch["id"], row["line_no"]),
                )
                continue
            await self._collect(batch, region, row, entry, key, recheck=recheck)
        self.db.execute("UPDATE wl_platform_batches SET state = 'collected' WHERE id = ?", (part["id"],))

    async def _collect(
        self, batch: dict, region: Region, row: dict, entry: dict, key: KeyPolicy | None, *, recheck: bool
    ) -> None:
        batch_id, line_no = batch["id"], row["line_no"]
        request_id = f"{batch_id}-{line_no}"
        response = entry.get("response") or {}
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        if response.get("status_code") != 200:
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            failed = ApiError(
                str(error.get("message") or "the platform's batch refused this line"),
                code=error.get("code") if isinstance(error.get("code"), str) else None,
                status=int(response.get("status_code") or 502),
            )
            self.table.store(batch_id, line_no, error_entry(row["custom_id"], request_id, failed), None)
            return
        model = orjson.loads(row["body"])["model"]
        usage = _usage(body)
        routing = Routing(request_id, region.id, model, "batch", batch["origin"], None, 0.0, 0.0, booked=True)
        if recheck:
            settled = await self.router.accounts.ledger.port.usage_of_request(request_id)
            if settled is not None:
                routing.cash_yuan, routing.cost_yuan = settled.cash_yuan, settled.cost_yuan
                self.table.store(batch_id, line_no, _answer(row["custom_id"], request_id, body), routing)
                return
        offer = region.offer(model)
        if offer is None:
            return
        ask = Ask(model, "batch", batch["origin"], float(usage.prompt_tokens), float(usage.completion_tokens))
        price = batch_price_yuan(region, model, ask.input_tokens / offer.token_ratio,
                                 ask.output_tokens / offer.token_ratio) or 0.0
        tokens = usage.prompt_tokens + usage.completion_tokens
        factor = region.batch_api.price_factor if region.batch_api else 1.0
        cash = Option(region, offer, None, True, Charge(tokens, price, 0.0, 0.0, price), price, factor)
        ctx = RequestContext(
            work_class="batch", origin=batch["origin"], request_id=request_id, key_id=batch["key_id"],
            key=key, booked=True,
        )
        hold = None
        # a voucher of the region where it pays (and is worth more here than its plan price), else cash
        for option in (*self._voucher_options(region, offer, model, tokens, price, factor), cash):
            try:
                hold = await self.router.accounts.reserve(request_id, option, ask, ctx)
            except ApiError as exc:  # the key's budget cannot take it: the answer is withheld, as live
                self.table.store(batch_id, line_no, error_entry(row["custom_id"], request_id, exc), None)
                return
            if hold is not None:
                break  # None: that voucher ran dry (or its day's cap) meanwhile: the next payment
        if hold is None:
            return
        await self.router.accounts.settle(hold, option, ask, usage, routing, latency_s=0.0, ttft_s=None)
        self.table.store(batch_id, line_no, _answer(row["custom_id"], request_id, body), routing)


def _paying(
    vouchers: Iterable[Voucher], free: Mapping[str, float], prices: Mapping[str, float], *,
    region: Region, offer: Offer, model: str, tokens: int, price: float, factor: float, at: datetime,
) -> list[Option]:
    """Options paying a collected line (``price`` yuan, ``tokens`` model tokens) with a voucher.

    Each usable voucher of the region with a free balance, that covers more than the plan's
    price of the units it draws (what they are worth to other work), best first: a batch line
    pays as a live request would (DESIGN.md), at the batch price.
    """
    out = []
    for voucher in vouchers:
        if voucher.region != region.id or not voucher_usable(
            voucher, region=region.id, model=model, work_class="batch", at=at
        ):
            continue
        units, covered = voucher_pays(voucher, free.get(voucher.id, 0.0), tokens=tokens, cost_yuan=price)
        score = price - covered + prices.get(voucher.id, 0.0) * units
        if units > 0 and score < price:
            charge = Charge(tokens, price, units, covered, max(price - covered, 0.0))
            out.append(Option(region, offer, voucher, True, charge, score, factor))
    return sorted(out, key=lambda o: o.score)


def _line(row: dict, offer_of: Callable) -> bytes:
    body = orjson.loads(row["body"])
    offer = offer_of(body["model"])
    body["model"] = offer.upstream_name if offer is not None else body["model"]
    item = {"custom_id": row["custom_id"], "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps(item)


def _usage(body: dict) -> Usage:
    raw = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        reported=bool(raw),
    )


def _answer(custom_id: str, request_id: str, body: dict) -> dict:
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }
