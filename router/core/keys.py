"""Client keys: the master key, virtual keys with budgets and a data-residency policy.

Every request but ``/health`` presents ``Authorization: Bearer <key>`` once a master key
is configured (``master_key`` in the config, or ``SUANLI_MASTER_KEY`` for ``suanli serve``).
The master key may do anything; a virtual key (made with ``POST /admin/keys``) may call
the ``/v1`` API within its policy: its allowed regions or zones, its rpm, its budget, its
expiry. Without a master key suanli runs open, as the demo does: no key is checked.

A virtual key is stored only as the SHA-256 of its secret: the secret is 256 random
bits, so a fast hash is as strong as a slow one, and it keeps the per-request check to a
hash and a dict lookup (the row is cached for ``CACHE_TTL_S``; a revoke in this process
drops it at once, one in another replica is seen within the TTL).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from aiohttp import web

from suanli.config import Config
from suanli.router.errors import AuthenticationError, KeyRateLimitError
from suanli.router.ledger.keys import KeyBudgetHold, KeyRow

__all__ = [
    "CACHE_TTL_S",
    "CLIENT_KEY",
    "MASTER_KEY_ID",
    "KeyPolicy",
    "KeyRing",
    "KeyStore",
    "load_policy",
    "new_secret",
    "policy_of",
    "secret_sha256",
    "visible_models",
    "within_regions",
]

CACHE_TTL_S = 5.0
MASTER_KEY_ID = "master"  # the key id usage rows carry for requests made with the master key
_CACHE_MAX = 10_000
_SECRET_PREFIX = "sk-suanli-"


def new_secret() -> str:
    """A fresh virtual key secret: 256 random bits."""
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What one authenticated virtual key may do, as the request path needs it."""

    key_id: str
    allowed_regions: frozenset[str] | None  # None: any region
    default_class: str | None
    origin: str | None
    budget_yuan_per_day: float | None
    budget_yuan_per_month: float | None
    rpm: int | None
    priority: str = "normal"  # critical | normal | sheddable: who gives way when supply is short

    def budget_hold(self, cost_yuan: float, now: datetime, tz: ZoneInfo) -> KeyBudgetHold | None:
        """The budget hold of a request that may cost up to ``cost_yuan``; None without a budget."""
        if self.budget_yuan_per_day is None and self.budget_yuan_per_month is None:
            return None
        local = now.astimezone(tz)
        return KeyBudgetHold(
            key_id=self.key_id,
            day=f"day:{local:%Y-%m-%d}",
            month=f"month:{local:%Y-%m}",
            amount_yuan=cost_yuan,
            day_limit_yuan=self.budget_yuan_per_day,
            month_limit_yuan=self.budget_yuan_per_month,
        )


CLIENT_KEY = web.RequestKey("client_key", KeyPolicy)  # absent: the master key, or no keys checked


class KeyStore(Protocol):
    """Where key rows are read: the ledger's async port (``router/ledger/port.py``), either backend."""

    async def key_by_secret(self, secret_sha256: str) -> KeyRow | None: ...
    async def key(self, key_id: str) -> KeyRow | None: ...


async def load_policy(keys: KeyStore | None, config: Config, key_id: str | None) -> KeyPolicy | None:
    """The policy of a stored virtual key (for work that runs later, as batch lines do); None if none."""
    if keys is None or key_id is None or key_id == MASTER_KEY_ID:
        return None
    row = await keys.key(key_id)
    return None if row is None else policy_of(row, config)


def within_regions(config: Config, allowed: frozenset[str] | None) -> Config:
    """``config`` cut down to the ``allowed`` regions and their vouchers, to plan a key's later work."""
    if allowed is None:
        return config
    return config.model_copy(update={
        "regions": tuple(r for r in config.regions if r.id in allowed),
        "vouchers": tuple(v for v in config.vouchers if v.region in allowed),
    })


def visible_models(listing: dict, config: Config, key: KeyPolicy | None) -> dict:
    """The ``/v1/models`` list as ``key`` may use it: only models and pins within its regions."""
    allowed = None if key is None else key.allowed_regions
    if allowed is None:
        return listing
    offered = {offer.name for r in config.regions if r.id in allowed for offer in r.models}
    data = [
        entry for entry in listing["data"]
        if (entry["owned_by"] in allowed if "/" in entry["id"] else entry["id"] in offered)
    ]
    return {**listing, "data": data}


def policy_of(row: KeyRow, config: Config) -> KeyPolicy:
    """A key row's policy, its zones turned into the regions of the config in them."""
    allowed: set[str] | None = None
    if row.allowed_regions is not None:
        allowed = set(row.allowed_regions)
    if row.allowed_zones is not None:
        in_zones = {r.id for r in config.regions if r.zone in row.allowed_zones}
        allowed = in_zones if allowed is None else allowed & in_zones
    return KeyPolicy(
        key_id=row.id,
        allowed_regions=None if allowed is None else frozenset(allowed),
        default_class=row.default_class,
        origin=row.origin,
        budget_yuan_per_day=row.budget_yuan_per_day,
        budget_yuan_per_month=row.budget_yuan_per_month,
        rpm=row.rpm,
        priority=row.priority,
    )


class KeyRing:
    """Checks presented keys: the master key, or a virtual key from the ledger (cached)."""

    def __init__(
        self,
        config: Config,
        *,
        master_key: str,
        keys: Callable[[], KeyStore | None],
        clock: Callable[[], datetime],
        cache_ttl_s: float = CACHE_TTL_S,
    ) -> None:
        self.config = config
        self.cache_ttl_s = cache_ttl_s
        self.master_key = master_key
        self._keys = keys  # None until the Router has opened its ledger
        self._clock = clock
        # secret sha256 -> (monotonic time fetched, row, its policy); None for an unknown secret
        self._cache: dict[str, tuple[float, KeyRow | None, KeyPolicy | None]] = {}
        self._calls: dict[str, deque[float]] = {}  # key id -> monotonic times of its last rpm calls

    @property
    def locked(self) -> bool:
        """Whether keys are checked at all (a master key is configured)."""
        return bool(self.master_key)

    def is_master(self, presented: str | None) -> bool:
        return (
            bool(self.master_key)
            and presented is not None
            and hmac.compare_digest(presented.encode(), self.master_key.encode())
        )

    def require_master(self, presented: str | None) -> None:
        """For the admin API: the master key, or 401."""
        if not self.locked:
            raise AuthenticationError(
                "the admin API needs a master key: set master_key in the config or SUANLI_MASTER_KEY"
            )
        if presented is None:
            raise AuthenticationError("missing API key: send Authorization: Bearer <master key>")
        if not self.is_master(presented):
            raise AuthenticationError("this endpoint needs the master key")

    async def authenticate(self, presented: str | None) -> KeyPolicy | None:
        """The policy of the presented client key; None for the master key or when unlocked.

        Raises AuthenticationError (401) for no key or a wrong, revoked or expired one, and
        ApiError 429 when the key is over its rpm. The cached path is a hash and a dict lookup;
        a miss awaits the ledger (SQLite answers inline, PostgreSQL with a round trip).
        """
        if not self.locked:
            return None
        if presented is None:
            raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
        if self.is_master(presented):
            return None
        digest = secret_sha256(presented)
        cached = self._fresh(digest)
        if cached is None:
            keys = self._keys()
            if keys is None:
                raise AuthenticationError("the router is not started")
            cached = self._store(digest, await keys.key_by_secret(digest))
        return self._admit(*cached)

    def _admit(self, row: KeyRow | None, policy: KeyPolicy | None) -> KeyPolicy:
        if row is None or policy is None:
            raise AuthenticationError("incorrect API key provided")
        if row.revoked is not None:
            raise AuthenticationError(f"API key {row.id} was revoked", code="key_revoked")
        if row.expires is not None and self._clock().timestamp() >= row.expires:
            raise AuthenticationError(f"API key {row.id} has expired", code="key_expired")
        if row.rpm is not None:
            self._count_call(row.id, row.rpm)
        return policy

    def reconfigure(self, config: Config) -> None:
        """A config reload: key policies (zones to regions) are worked out again on ``config``."""
        self.config = config
        self._cache.clear()

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after a revoke), so the next request reads the ledger."""
        for digest, (_, row, _) in list(self._cache.items()):
            if row is not None and row.id == key_id:
                del self._cache[digest]

    def _fresh(self, digest: str) -> tuple[KeyRow | None, KeyPolicy | None] | None:
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.cache_ttl_s:
            return cached[1], cached[2]
        return None

    def _store(self, digest: str, row: KeyRow | None) -> tuple[KeyRow | None, KeyPolicy | None]:
        policy = None if row is None else policy_of(row, self.config)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (time.monotonic(), row, policy)
        return row, policy

    def _count_call(self, key_id: str, rpm: int) -> None:
        now = time.monotonic()
        calls = self._calls.setdefault(key_id, deque())
        while calls and now - calls[0] >= 60.0:
            calls.popleft()
        if len(calls) >= rpm:
            wait_s = 60.0 - (now - calls[0])
            raise KeyRateLimitError(
                f"API key {key_id} is limited to {rpm} requests per minute", retry_after_s=wait_s
            )
        calls.append(now)
