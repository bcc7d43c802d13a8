"""Region limits shared by router replicas: through Redis, or as each replica's share.

A platform's rpm/tpm/concurrency limits are the platform's, not one router's. Two ways to
respect them with several replicas:

- ``limits_url: redis://host:6379/0``: ``RedisLimits`` admits on the local state (no round
  trip on the request path, ``acquire`` stays non-blocking) and, every ``sync_s`` (0.25 s),
  publishes what this replica used over the last minute (requests, tokens, in flight per
  region) under a key that expires with it, and reads the others'. A request is admitted
  only while others' use plus this replica's stays under the limit. The others' figures are
  at most one period old, so the platform sees at most one period of the others' admissions
  beyond its limit; a dead replica's use drops out when its key expires (3 s).
- without Redis, ``apply_share`` gives each replica ``1/n`` of every limit, ``n`` the
  replicas alive on the shared ledger (``router/core/replica.py`` recomputes it each period).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Iterable

import orjson
from redis.exceptions import RedisError

from suanli.config import Config, Region
from suanli.router.core.limits import Lease, RequestLimits

__all__ = ["RedisLimits", "apply_share"]

log = logging.getLogger("suanli.limits")

_MINUTE_S = 60.0
_ALIVE_S = 3.0  # a replica whose use was not refreshed for this long is gone


def apply_share(limits: RequestLimits, regions: Iterable[Region], replicas: int) -> None:
    """Set every region's limits in ``limits`` to ``1/replicas`` of the configured ones."""
    n = max(replicas, 1)
    for region in regions:
        state = limits.regions.get(region.id)
        if state is None:
            continue
        cfg = region.limits
        if state.rpm is not None and cfg.rpm:
            state.rpm.rate_limit = max(cfg.rpm // n, 1)
        if state.tpm is not None and cfg.tpm:
            state.tpm = max(cfg.tpm // n, 1)  # the minute's tokens so far still count
        if state.concurrency is not None and cfg.concurrency:
            state.concurrency = max(cfg.concurrency // n, 1)


class RedisLimits(RequestLimits):
    """``RequestLimits`` that also keeps under what the other replicas report using (Redis)."""

    def __init__(self, regions: Iterable[Region], *, url: str, namespace: str, replica_id: str,
                 sync_s: float = 0.25) -> None:
        regions = tuple(regions)
        super().__init__(regions)
        self._configured = {r.id: r.limits for r in regions}
        self._url = url
        self._prefix = f"suanli:{namespace}:limits"
        self._replica = replica_id
        self._sync_s = sync_s
        # region id -> (monotonic s, tokens) of each admission in the last minute
        self._taken: dict[str, deque[tuple[float, int]]] = {r.id: deque() for r in regions}
        self._others: dict[str, tuple[int, int, int]] = {}  # region -> (requests, tokens, in flight)
        self._redis = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def started(cls, config: Config, *, replica_id: str) -> RedisLimits:
        """Running limits for ``config.limits_url``; keys are namespaced by the ledger they share."""
        if not config.limits_url:
            raise ValueError("limits_url is not set")
        namespace = hashlib.sha256(config.ledger.url.encode()).hexdigest()[:16]
        limits = cls(config.regions, url=config.limits_url, namespace=namespace, replica_id=replica_id)
        await limits.start()
        return limits

    async def start(self) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
        await self.sync()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._redis is not None:
            try:
                await self._redis.delete(f"{self._prefix}:use:{self._replica}")
                await self._redis.zrem(f"{self._prefix}:replicas", self._replica)
            except (OSError, RedisError) as exc:
                log.warning("limits: could not withdraw from redis: %s", exc)
            await self._redis.aclose()
            self._redis = None

    def acquire(self, region: str, tokens: int) -> Lease | float:
        cfg = self._configured.get(region)
        others = self._others.get(region)
        if cfg is not None and others is not None:
            requests, used_tokens, in_flight = others
            mine = self._mine(region)
            state = self.regions[region]
            if cfg.concurrency and in_flight + state.in_flight >= cfg.concurrency:
                return 1.0
            if cfg.rpm and requests + mine[0] >= cfg.rpm:
                return _MINUTE_S / cfg.rpm
            if cfg.tpm and used_tokens + mine[1] + min(tokens, cfg.tpm) > cfg.tpm:
                return max(tokens, 1) * _MINUTE_S / cfg.tpm
        lease = super().acquire(region, tokens)
        if isinstance(lease, Lease) and region in self._taken:
            self._taken[region].append((time.monotonic(), tokens))
        return lease

    def _mine(self, region: str) -> tuple[int, int]:
        """(requests, tokens) this replica admitted at ``region`` in the last minute."""
        taken = self._taken[region]
        cutoff = time.monotonic() - _MINUTE_S
        while taken and taken[0][0] < cutoff:
            taken.popleft()
        return len(taken), sum(t for _, t in taken)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self.sync()
            except (OSError, RedisError) as exc:
                # Redis away: keep admitting on the last figures; each replica's own limits still hold.
                log.warning("limits: redis sync failed: %s", exc)

    async def sync(self) -> None:
        """Publish this replica's use of the last minute, read the others'."""
        if self._redis is None:
            raise RuntimeError("RedisLimits.sync() before start()")
        mine = {rid: [*self._mine(rid), self.regions[rid].in_flight] for rid in self._taken}
        now = time.time()
        members = f"{self._prefix}:replicas"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self._prefix}:use:{self._replica}", orjson.dumps(mine), ex=int(_ALIVE_S) + 1)
            pipe.zadd(members, {self._replica: now})
            pipe.zremrangebyscore(members, "-inf", now - _ALIVE_S)
            pipe.zrange(members, 0, -1)
            *_, names = await pipe.execute()
        peers = [n.decode() for n in names if n.decode() != self._replica]
        totals: dict[str, list[int]] = {}
        if peers:
            for raw in await self._redis.mget([f"{self._prefix}:use:{p}" for p in peers]):
                if raw is None:
                    continue
                for rid, use in orjson.loads(raw).items():
                    total = totals.setdefault(rid, [0, 0, 0])
                    for i, value in enumerate(use):
                        total[i] += int(value)
        self._others = {rid: (t[0], t[1], t[2]) for rid, t in totals.items()}

    def others(self) -> dict[str, tuple[int, int, int]]:
        """Region -> (requests, tokens, in flight) the other replicas reported, for tests and status."""
        return dict(self._others)
