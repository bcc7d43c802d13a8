"""Operators' live changes over HTTP (master key only): a voucher adjustment, a config reload.

POST /admin/vouchers/{id}/adjust  {amount, reason}: a top-up (amount > 0) or a cut (< 0) in the
                                  voucher's units, recorded on the ledger; answers the new balance
POST /admin/reload                re-read the config file the server started from (as SIGHUP);
                                  answers what changed, or 400 with the old config kept
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import orjson
from aiohttp import web

from suanli.config import Config, ConfigError
from suanli.router.core.keys import KeyRing
from suanli.router.core.router import Router
from suanli.router.errors import BadRequestError

__all__ = ["add_ops_routes", "reload_config"]

log = logging.getLogger("suanli.admin")

ConfigSource = Callable[[], Config]  # re-reads the config file (load_config(path), or the catalog)

_REASON_MAX = 500


def add_ops_routes(app: web.Application, ring: KeyRing, router: Router, source: ConfigSource | None) -> None:
    """Add the routes above; each checks the master key itself (writes, never left open)."""

    def admin(request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() or None if header.lower().startswith("bearer ") else None
        ring.require_master(presented)

    async def adjust(request: web.Request) -> web.Response:
        admin(request)
        amount, reason = _adjustment(await request.read())
        done = await router.adjust_voucher(request.match_info["id"], amount, reason=reason)
        return web.json_response(done)

    async def reload(request: web.Request) -> web.Response:
        admin(request)
        return web.json_response(await reload_config(router, source))

    app.router.add_post("/admin/vouchers/{id}/adjust", adjust)
    app.router.add_post("/admin/reload", reload)


async def reload_config(router: Router, source: ConfigSource | None) -> dict[str, object]:
    """Re-read the config and apply it (``Router.reload``); BadRequestError keeps the old one."""
    if source is None:
        raise BadRequestError("this server was not started from a config file it can re-read",
                              param=None, code="invalid_config")
    try:
        config = source()
    except ConfigError as exc:
        problems = "; ".join(f"{path or '<root>'}: {message}" for path, message in exc.problems)
        raise BadRequestError(f"the config in {exc.source} is not valid, the running one is kept: {problems}",
                              param=None, code="invalid_config") from exc
    return await router.reload(config)


def _adjustment(raw: bytes) -> tuple[float, str]:
    """``{amount, reason}`` checked: a finite non-zero number, a non-empty reason."""
    try:
        body = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}", param=None, code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequestError('send {"amount": units, "reason": "why"}', param=None, code="invalid_body")
    unknown = sorted(set(body) - {"amount", "reason"})
    if unknown:
        raise BadRequestError(f"unknown field {unknown[0]!r}: send amount and reason", param=unknown[0],
                              code="unknown_parameter")
    amount, reason = body.get("amount"), body.get("reason")
    number = isinstance(amount, int | float) and not isinstance(amount, bool)
    if not number or not math.isfinite(amount) or amount == 0:  # type: ignore[arg-type]
        raise BadRequestError("amount must be a non-zero number of the voucher's units (negative: a cut)",
                              param="amount", code="invalid_amount")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > _REASON_MAX:
        raise BadRequestError(f"reason must be a non-empty string of at most {_REASON_MAX} characters",
                              param="reason", code="invalid_reason")
    return float(amount), reason.strip()
