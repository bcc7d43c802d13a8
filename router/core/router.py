"""The Router: one request path shared by the Python SDK and the HTTP app.

authenticate (app) -> classify -> estimate tokens -> rank regions -> hold on the ledger ->
send upstream -> on failure before the first byte, void and try the next region ->
relay -> settle the reported usage.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any, cast

import aiohttp

from suanli.config import Config, Region, load_config
from suanli.providers import StreamReply, Upstream, UpstreamCall, UpstreamError
from suanli.providers.tokenizer import load_tokenizer
from suanli.router.core.accounts import Accounts
from suanli.router.core.classify import classify
from suanli.router.core.context import RequestContext
from suanli.router.core.controls import narrowed, parse_controls, with_deadline
from suanli.router.core.cost import with_cost
from suanli.router.core.exhaustion import ExhaustionWatch
from suanli.router.core.health import Health
from suanli.router.core.latency import LatencyTracker
from suanli.router.core.limits import RequestLimits
from suanli.router.core.metrics import MetricsBook
from suanli.router.core.picking import RegionPicker, Wait
from suanli.router.core.planning import Replanner
from suanli.router.core.reload import check_reloadable, config_changes, shrinks
from suanli.router.core.results import Completion, CompletionStream, Routing, voucher_dict
from suanli.router.core.sessions import Visit, session_keys
from suanli.router.core.shedding import Shedding
from suanli.router.core.streaming import relay_stream
from suanli.router.core.validate import longest_choice_tokens, validate_body
from suanli.router.errors import BudgetExceededError, LedgerUnavailableError, UpstreamFailedError
from suanli.router.ledger.port import BlockingLedger

__all__ = ["RequestContext", "Router", "new_request_id", "voucher_dict"]  # 1st: context.py; last: results.py

log = logging.getLogger("suanli.router")



# Request ids: a random prefix per process and a counter, 24 hex digits like a uuid4's first
# 24, without a getrandom syscall and a UUID object per request.
_ID_PREFIX = secrets.token_hex(6)
_ID_SEQ = count(1)


def new_request_id() -> str:
    """A fresh request id (``req-`` and 24 hex digits)."""
    return f"req-{_ID_PREFIX}{next(_ID_SEQ):012x}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Router:
    """The suanli SDK: ``async with Router.from_config(path) as router: ...``.

    It composes ``accounts`` (the ledger: holds, settlements, free balances; the workloads use
    it too) and ``picker`` (where a request goes now: health, latency, limits, the retry
    budget), and keeps the request path in ``handle``.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] | None = None,
        session: aiohttp.ClientSession | None = None,
        upstreams: Mapping[str, Upstream] | None = None,
        sim_latency_scale: float = 1.0,
    ) -> None:
        self.config = config
        self.clock = clock or _utc_now
        self._session = session
        self._own_session = session is None
        self._upstreams: dict[str, Upstream] = dict(upstreams or {})
        self._sim_latency_scale = sim_latency_scale
        self._fleet: Any = None
        self._fleets: list[Any] = []  # sims of regions a config reload added
        self.max_attempts = config.health.retry.max_attempts
        self._slowest_pace = min(r.timeouts.whole_answer_tokens_per_s for r in config.regions)
        self.metrics = MetricsBook()  # counters behind GET /metrics
        self._background: set[asyncio.Task] = set()  # in-doubt settlements of callers that left
        self._added: dict[str, str] = {}  # region id -> base URL of a sim a config reload started
        self._reloading = asyncio.Lock()
        self.reload_listeners: list[Callable[[Config], None]] = []  # the app's parts that keep a config
        # The planner reads balances and blocked regions through these methods, once both exist.
        self.planning = Replanner(config, clock=self.clock, balances=self.balances, blocked=self._unhealthy)
        self.accounts = Accounts(config, clock=self.clock, planning=self.planning, metrics=self.metrics)
        self.exhaustion = ExhaustionWatch(self.accounts, config.health.exhausted, self.clock)  # 402 marks
        self.picker = RegionPicker(config, clock=self.clock, accounts=self.accounts, planning=self.planning,
                                   metrics=self.metrics, trust_sims=sim_latency_scale == 1.0)
        self.shedding = Shedding(self.clock, self.picker.down)  # who gives way when supply is short

    @classmethod
    def from_config(cls, source: str | Path | Mapping[str, Any] | Config, **options: Any) -> Router:
        """A Router for a config file path, a parsed mapping, or a Config."""
        config = source if isinstance(source, Config) else load_config(source)
        return cls(config, **options)

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the ledger and the HTTP session, and start in-process sim platforms."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), auto_decompress=False
            )
        base_urls = await self._start_sims()
        # Load the tokenizer now, off the loop, so the first request does not pay for it.
        await asyncio.to_thread(load_tokenizer)
        # On a shared ledger the replica takes 1/n of the limits, unless Redis shares them.
        await self.accounts.open(limits=None if self.config.limits_url else self.picker.limits)
        replica = self.accounts.replica
        if self.config.limits_url:
            from suanli.router.core.limits_shared import RedisLimits

            replica_id = replica.id if replica is not None else secrets.token_hex(6)
            self.picker.limits = await RedisLimits.started(self.config, replica_id=replica_id)
        for region in self.config.regions:
            if region.id not in self._upstreams:
                self._upstreams[region.id] = self._make_upstream(region.provider, base_urls)
        self.picker.start_probes(self._session, base_urls)
        self.exhaustion.start()
        if replica is None:  # replicas plan only while they lead (router/core/replica.py)
            self.planning.start()

    async def _start_sims(self) -> dict[str, str]:
        if not any(r.provider == "sim" and not r.base_url for r in self.config.regions):
            return {}
        from suanli.providers.sim import SimFleet

        # The sims keep the Router's time: a virtual clock moves their prompt caches' TTL too.
        self._fleet = SimFleet(
            self.config, latency_scale=self._sim_latency_scale, now_s=lambda: self.clock().timestamp()
        )
        await self._fleet.start()
        return dict(self._fleet.urls)

    def base_url(self, region_id: str) -> str | None:
        """A region's OpenAI-compatible base URL (an in-process sim's loopback URL once started)."""
        if self._fleet is not None and region_id in self._fleet.urls:
            return self._fleet.urls[region_id]
        if region_id in self._added:
            return self._added[region_id]
        region = self.config.region(region_id)
        return region.base_url if region is not None else None

    def _make_upstream(self, provider: str, base_urls: dict[str, str]) -> Upstream:
        if provider in ("openai", "sim"):
            from suanli.providers.openai_compat import OpenAICompatUpstream

            return OpenAICompatUpstream(self._session, base_urls=base_urls)
        from suanli.providers.litellm_adapter import LiteLLMUpstream, warm_up

        warm_up()  # litellm's import takes seconds: start it now, not on the first request
        return LiteLLMUpstream()

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.picker.stop_probes()
        await self.exhaustion.stop()
        await asyncio.to_thread(self.planning.stop)
        for upstream in {id(u): u for u in self._upstreams.values()}.values():
            await upstream.close()
        for fleet in [self._fleet, *self._fleets]:
            if fleet is not None:
                await fleet.stop()
        self._fleet, self._fleets = None, []
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None
        await self.picker.limits.stop()  # RedisLimits: leave the shared tally
        await self.accounts.close()  # and, on a shared ledger, this replica's duties

    async def chat_completions(
        self, *, context: RequestContext | None = None, **body: Any
    ) -> Completion | CompletionStream:
        """``POST /v1/chat/completions``; ``stream=True`` gives a CompletionStream."""
        return await self.handle("chat/completions", body, context)

    async def completions(
        self, *, context: RequestContext | None = None, **body: Any
    ) -> Completion | CompletionStream:
        """``POST /v1/completions`` (legacy text completions)."""
        return await self.handle("completions", body, context)

    async def embeddings(self, *, context: RequestContext | None = None, **body: Any) -> Completion:
        """``POST /v1/embeddings``."""
        result = await self.handle("embeddings", body, context)
        return cast(Completion, result)  # validate_body forbids streamed embeddings

    def models(self) -> dict:
        """The ``GET /v1/models`` list: public names, then ``REGION/MODEL`` pins."""
        created = 1_764_547_200  # 2025-12-01, a fixed date: model entries do not change per call
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "suanli"}
            for name in self.config.model_names()
        ]
        data += [
            {"id": f"{region.id}/{offer.name}", "object": "model", "created": created, "owned_by": region.id}
            for region in self.config.regions
            for offer in region.models
        ]
        return {"object": "list", "data": data}

    @property
    def ledger(self) -> BlockingLedger | None:
        """The ledger's blocking face, for worker threads and scripts (None until started): the
        SQLite ledger itself, or on PostgreSQL calls that wait on the loop from another thread."""
        return self.accounts.ledger.blocking if self.accounts.is_open else None

    @property
    def health(self) -> Health:
        """Each region's health: failures, cool-downs, ejections (the picker's)."""
        return self.picker.health

    @property
    def latency(self) -> LatencyTracker:
        """Measured time to first token and whole-request latency per region (the picker's)."""
        return self.picker.latency

    @property
    def limits(self) -> RequestLimits:
        """Each region's rpm/tpm/concurrency limits in force here (the picker's; settable)."""
        return self.picker.limits

    @limits.setter
    def limits(self, limits: RequestLimits) -> None:
        self.picker.limits = limits

    def voucher_report(self) -> list[dict]:
        """Every voucher's balance, holds, spend, burn and validity, JSON-ready."""
        return [voucher_dict(status) for status in self.accounts.vouchers()]

    def balances(self) -> dict[str, float]:
        """Voucher id -> balance not yet spent or held."""
        return self.accounts.balances()

    def plan_info(self) -> dict:
        """The live plan: planned_at, solve_ms, voucher shadow and region capacity prices, ratios."""
        return self.planning.info()

    def region_stats(self) -> dict[str, dict]:
        """Region id -> health, measured latency and limit use, JSON-ready (see RegionPicker)."""
        return self.picker.region_stats()

    def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        """After a top-up: draw on that voucher or that region's cash again."""
        self.accounts.clear_exhausted(voucher_id=voucher_id, region=region)

    def exhausted(self) -> list[dict[str, object]]:
        """Why each voucher or region's cash is out (a platform's 402), since when, and when it is retried."""
        return self.exhaustion.marks()

    async def adjust_voucher(self, voucher_id: str, amount: float, *, reason: str) -> dict[str, object]:
        """Top up (``amount`` > 0) or cut a voucher on the ledger (``ledger/adjust.py``); the plan
        follows at once. The new balance and what moved, JSON-ready; NotFoundError if unknown."""
        done = await self.accounts.adjust(voucher_id, amount, reason)
        if done.applied < 0:
            self.shedding.shrank(f"voucher {voucher_id} cut")
        return done.as_dict()

    async def reload(self, config: Config) -> dict[str, object]:
        """Apply a re-read config to requests that start from now; those in flight finish on what
        they started with. What changed, JSON-ready (``router/core/reload.py``). A config that
        changes what needs a restart is refused (BadRequestError) and the old one stays."""
        check_reloadable(self.config, config)
        async with self._reloading:
            changes = config_changes(self.config, config)
            if shrinks(changes):
                self.shedding.shrank("a config reload removed capacity")
            await self._start_regions([r for r in config.regions if r.id not in self._upstreams])
            await self.accounts.reconfigure(config)
            # Nothing awaits from here on: every part switches between two steps of the requests.
            self.picker.reconfigure(config)
            self.planning.reconfigure(config)
            self.config, self._names = config, None
            self._slowest_pace = min(r.timeouts.whole_answer_tokens_per_s for r in config.regions)
            for listener in self.reload_listeners:
                listener(config)
        log.warning("config reloaded: %s", {k: v for k, v in changes.items() if v})
        return changes

    async def _start_regions(self, regions: list[Region]) -> None:
        """Upstreams for regions a reload added; an in-process sim for a sim region without base_url."""
        sims = [r for r in regions if r.provider == "sim" and not r.base_url]
        if sims:
            from suanli.providers.sim import SimFleet

            fleet = SimFleet(sims, latency_scale=self._sim_latency_scale)
            await fleet.start()
            self._fleets.append(fleet)
            self._added.update(fleet.urls)
        for region in regions:
            self._upstreams[region.id] = self._make_upstream(region.provider, dict(self._added))

    def _unhealthy(self) -> frozenset[str]:
        return self.picker.unhealthy()  # read by the re-planner's thread

    async def handle(
        self, endpoint: str, body: Any, context: RequestContext | None = None
    ) -> Completion | CompletionStream:
        """Route one OpenAI request body for ``endpoint``; the app and the SDK both call this."""
        accounts, picker = self.accounts, self.picker
        accounts.ledger  # noqa: B018 - fails early when the Router was not started
        ctx = context or RequestContext()
        # The request's start: its one pricing timestamp (time-of-use band, cache TTL), on every
        # attempt, for the hold and the settle alike (the option carries its factor).
        started_at = self.clock()
        start_s = started_at.timestamp()
        body = validate_body(endpoint, body)
        controls = parse_controls(self.config, body.get("suanli"))
        if controls.deadline_s is not None:
            ctx = with_deadline(ctx)
        ask = narrowed(classify(self.config, endpoint, body, ctx, model_names=self._model_names()), controls)
        request_id = ctx.request_id or new_request_id()
        forward = {
            k: v for k, v in body.items() if k != "suanli" and not (k == "service_tier" and v == "flex")
        }
        priced: list[tuple[float, str]] = []  # (price, region) of options over the request's cap
        stream = bool(body.get("stream"))
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        failures: list[UpstreamError] = []
        excluded: set[str] = set()
        waits: list[Wait] = []  # regions skipped for their limits, cool-down or ejection
        attempts = 0
        longest = longest_choice_tokens(endpoint, body, self.config.default_max_tokens)
        # The conversation it continues (its prompt cache, router/core/sessions.py) and the one it starts.
        continues, registers = session_keys(
            endpoint, body, named=controls.session, header=ctx.session, key_id=ctx.key_id
        )
        visit = picker.sessions.visit(continues)
        deadline = time.perf_counter() + self.config.health.retry.deadline_s
        if not stream:
            # A whole answer's first byte is its last: the deadline to it grows with its length.
            deadline += longest / self._slowest_pace
        share = self.shedding.admit(ctx.key.priority if ctx.key is not None else "normal")  # ShedError
        picker.entered()
        try:
            while attempts < self.max_attempts:
                if attempts and not await picker.may_retry(deadline):
                    break
                picked = picker.pick(ask, excluded, waits, controls, priced, stream=stream, visit=visit,
                                     at=started_at, share=share)
                if picked is None:
                    break
                option, lease = picked
                try:
                    hold = await accounts.reserve(request_id, option, ask, ctx)
                except (BudgetExceededError, LedgerUnavailableError):
                    lease.release()  # a spent key budget or a ledger that cannot write: no region would do
                    raise
                if hold is None:
                    lease.release()
                    continue  # the voucher ran dry under us: rank again with the new balance
                attempts += 1
                call = UpstreamCall(
                    option.region,
                    endpoint,
                    {**forward, "model": option.offer.upstream_name},
                    stream=stream,
                    wants_usage=wants_usage,
                    output_tokens=longest,
                )
                started = time.perf_counter()
                routing = Routing(
                    request_id=request_id,
                    region=option.region.id,
                    model=ask.model,
                    work_class=ask.work_class,
                    origin=ask.origin,
                    voucher=hold.voucher_id,
                    cash_yuan=option.charge.cash_yuan,
                    cost_yuan=option.charge.cost_yuan,
                    attempts=attempts,
                    booked=ctx.booked,
                )
                try:
                    upstream = self._upstreams[option.region.id]
                    reply = await picker.send(upstream, call, hold, lease, attempts, deadline - started)
                except UpstreamError as exc:
                    failures.append(exc)
                    if exc.in_doubt:
                        await accounts.settle_in_doubt(
                            hold, option, ask, routing, latency_s=time.perf_counter() - started
                        )
                        if not stream:  # the rule of README "In doubt": never run it twice blindly
                            raise UpstreamFailedError.in_doubt(exc, routing.cost_yuan) from exc
                    elif not exc.retryable:
                        raise UpstreamFailedError.from_upstream(exc) from exc
                    excluded.add(option.region.id)
                    continue
                except asyncio.CancelledError:
                    # The caller left while the upstream had the call: in doubt, settled behind.
                    self._behind(accounts.settle_in_doubt(hold, option, ask, routing, latency_s=0.0))
                    raise
                picker.sessions.served(
                    registers,
                    Visit(option.region.id, ask.model, start_s, ask.input_tokens * option.offer.token_ratio),
                )
                if isinstance(reply, StreamReply):
                    return relay_stream(accounts, picker, reply, routing, hold, option, ask, started, lease,
                                        wants_usage)
                try:  # the answer is held until its usage is committed (retried while the ledger cannot)
                    await accounts.settle(
                        hold,
                        option,
                        ask,
                        reply.usage,
                        routing,
                        latency_s=time.perf_counter() - started,
                        ttft_s=reply.ttft_s,
                    )
                except LedgerUnavailableError:
                    lease.release(reply.usage.prompt_tokens + reply.usage.completion_tokens)
                    raise
                picker.measured(routing, reply.ttft_s, time.perf_counter() - started, lease)
                return Completion(with_cost(reply.body, routing), routing)
        finally:
            picker.left()
        raise picker.failed(ask, failures, waits, priced, controls.max_price_yuan_per_mtok)

    def _behind(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to its end even though the caller is gone (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _model_names(self) -> frozenset[str]:
        if getattr(self, "_names", None) is None:  # computed on first use (and after a reload)
            self._names = frozenset(self.config.model_names())
        return self._names
