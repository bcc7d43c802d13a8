"""The key admin API (master key only): create, list, show and revoke virtual keys; usage export.

POST   /admin/keys        {name, budget_yuan_per_day, budget_yuan_per_month, allowed_regions,
                           allowed_zones, default_class, origin, rpm, expires, priority} -> 201 {id, key, ...}
GET    /admin/keys        every key, without secrets, with today's and this month's spend
GET    /admin/keys/{id}   one key
DELETE /admin/keys/{id}   revoke it (the row stays, for the audit)
GET    /admin/usage.csv   ?voucher=ID&from=&to= : the subsidy-claim CSV of ``suanli audit export``
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suanli.config import WorkClass, Zone
from suanli.router.core.keys import KeyRing, new_secret, secret_sha256
from suanli.router.core.router import Router
from suanli.router.errors import ApiError, BadRequestError, LedgerError, NotFoundError
from suanli.router.ledger.audit import ChainBrokenError, export_csv, parse_bound
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.port import LedgerHandle

__all__ = ["KeySpec", "add_admin_routes", "key_dict"]


MAX_BUDGET_YUAN = 1e9


class KeySpec(BaseModel):
    """The body of ``POST /admin/keys``: all but ``name`` optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    # At most a billion yuan: budgets are kept in nano-yuan in a 64-bit integer (9.2e9 yuan).
    budget_yuan_per_day: float | None = Field(default=None, ge=0, le=MAX_BUDGET_YUAN)
    budget_yuan_per_month: float | None = Field(default=None, ge=0, le=MAX_BUDGET_YUAN)
    allowed_regions: tuple[str, ...] | None = None
    allowed_zones: tuple[Zone, ...] | None = None
    default_class: WorkClass | None = None
    origin: Zone | None = None
    rpm: int | None = Field(default=None, gt=0)
    expires: datetime | None = None
    # Who gives way first when supply shrinks (router/core/shedding.py).
    priority: Literal["critical", "normal", "sheddable"] = "normal"


def _spec(body: object, router: Router) -> KeySpec:
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object", param=None)
    try:
        spec = KeySpec.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise BadRequestError(f"{param or 'body'}: {first['msg']}", param=param) from None
    for region in spec.allowed_regions or ():
        if router.config.region(region) is None:
            known = ", ".join(r.id for r in router.config.regions)
            raise BadRequestError(f"unknown region {region!r} (known: {known})", param="allowed_regions")
    if spec.expires is not None and spec.expires.tzinfo is None:
        spec = spec.model_copy(update={"expires": spec.expires.replace(tzinfo=_tz(router))})
    if spec.expires is not None and spec.expires <= router.clock():
        raise BadRequestError("expires is in the past", param="expires")
    return spec


def _tz(router: Router) -> ZoneInfo:
    return ZoneInfo(router.config.timezone)


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


def _ledger(router: Router) -> LedgerHandle:
    if not router.accounts.is_open:
        raise LedgerError("the router is not started")
    return router.accounts.ledger


async def key_dict(row: KeyRow, router: Router) -> dict[str, Any]:
    """A key as the admin API shows it: never its secret."""
    local = router.clock().astimezone(_tz(router))
    day, month = f"day:{local:%Y-%m-%d}", f"month:{local:%Y-%m}"
    spend = {}
    if router.accounts.is_open:
        spend = await router.accounts.ledger.port.key_spend(row.id, [day, month])
    return {
        "id": row.id,
        "object": "key",
        "name": row.name,
        "created": _iso(row.created),
        "expires": _iso(row.expires),
        "revoked": _iso(row.revoked),
        "budget_yuan_per_day": row.budget_yuan_per_day,
        "budget_yuan_per_month": row.budget_yuan_per_month,
        "allowed_regions": list(row.allowed_regions) if row.allowed_regions is not None else None,
        "allowed_zones": list(row.allowed_zones) if row.allowed_zones is not None else None,
        "default_class": row.default_class,
        "origin": row.origin,
        "rpm": row.rpm,
        "priority": row.priority,
        "spent_yuan_today": spend.get(day, (0.0, 0.0))[0],
        "spent_yuan_this_month": spend.get(month, (0.0, 0.0))[0],
        "held_yuan_today": spend.get(day, (0.0, 0.0))[1],
    }


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


def add_admin_routes(app: web.Application, ring: KeyRing, router: Router) -> None:
    """Add the key and usage-export routes; each checks the master key itself."""

    def admin(request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() or None if header.lower().startswith("bearer ") else None
        ring.require_master(presented)

    async def create(request: web.Request) -> web.Response:
        admin(request)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise BadRequestError(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
        spec = _spec(body, router)
        secret = new_secret()
        row = KeyRow(
            id=f"key-{secrets.token_hex(8)}",
            name=spec.name,
            created=router.clock().timestamp(),
            revoked=None,
            expires=spec.expires.timestamp() if spec.expires else None,
            budget_yuan_per_day=spec.budget_yuan_per_day,
            budget_yuan_per_month=spec.budget_yuan_per_month,
            allowed_regions=spec.allowed_regions,
            allowed_zones=spec.allowed_zones,
            default_class=spec.default_class,
            origin=spec.origin,
            rpm=spec.rpm,
            priority=spec.priority,
        )
        await _ledger(router).port.create_key(row, secret_sha256(secret))
        return _json({**await key_dict(row, router), "key": secret}, status=201)

    async def listing(request: web.Request) -> web.Response:
        admin(request)
        rows = await _ledger(router).port.keys()
        return _json({"object": "list", "data": [await key_dict(row, router) for row in rows]})

    async def found(key_id: str) -> KeyRow:
        row = await _ledger(router).port.key(key_id)
        if row is None:
            raise NotFoundError(f"no key with id {key_id!r}", param="id", code="key_not_found")
        return row

    async def show(request: web.Request) -> web.Response:
        admin(request)
        return _json(await key_dict(await found(request.match_info["id"]), router))

    async def revoke(request: web.Request) -> web.Response:
        admin(request)
        key_id = (await found(request.match_info["id"])).id
        row = await _ledger(router).port.revoke_key(key_id, router.clock().timestamp())
        ring.forget(key_id)
        return _json({**await key_dict(row, router), "deleted": True})

    async def usage_csv(request: web.Request) -> web.Response:
        admin(request)
        query = request.query
        voucher = query.get("voucher") or None
        try:
            since = parse_bound(query["from"], _tz(router), end=False) if query.get("from") else None
            until = parse_bound(query["to"], _tz(router), end=True) if query.get("to") else None
        except ValueError as exc:
            raise BadRequestError(str(exc), param="from/to") from None
        source = await _ledger(router).audit_source()  # on PostgreSQL one consistent snapshot
        try:
            text = export_csv(source, voucher=voucher, since=since, until=until, tz=_tz(router))
        except ChainBrokenError as exc:
            raise ApiError(str(exc), code="chain_broken") from exc
        return web.Response(text=text, content_type="text/csv")

    app.router.add_post("/admin/keys", create)
    app.router.add_get("/admin/keys", listing)
    app.router.add_get("/admin/keys/{id}", show)
    app.router.add_delete("/admin/keys/{id}", revoke)
    app.router.add_get("/admin/usage.csv", usage_csv)
