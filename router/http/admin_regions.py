"""Exhaustion marks over HTTP: why a region or voucher is out, and clearing it (master key only).

GET  /admin/exhausted             every mark: account, region, voucher_id, since, reason, recheck_at
POST /admin/regions/{id}/clear    the region's cash and every voucher of the region drawn on again
POST /admin/vouchers/{id}/clear   that voucher drawn on again

A platform's 402 marks what was charged (``router/core/exhaustion.py``); after a top-up the
operator clears it here (or with ``suanli vouchers clear``) instead of waiting for the re-check.
"""

from __future__ import annotations

import logging

from aiohttp import web

from suanli.router.core.keys import KeyRing
from suanli.router.core.router import Router
from suanli.router.errors import NotFoundError

__all__ = ["add_exhaustion_routes"]

log = logging.getLogger("suanli.admin")


def add_exhaustion_routes(app: web.Application, ring: KeyRing, router: Router) -> None:
    """Add the routes above; each checks the master key itself."""

    def admin(request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() or None if header.lower().startswith("bearer ") else None
        ring.require_master(presented)

    async def listing(request: web.Request) -> web.Response:
        # a read-only view: the app's middleware asks for the master key when one is set
        return web.json_response({"object": "list", "data": router.exhausted()})

    async def clear_region(request: web.Request) -> web.Response:
        admin(request)
        region_id = request.match_info["id"]
        marks = router.exhausted()
        if router.config.region(region_id) is None and all(m["region"] != region_id for m in marks):
            raise NotFoundError(f"no region {region_id!r} in the config", param="id")
        cleared = []
        for mark in marks:
            if mark["region"] != region_id:
                continue
            if mark["voucher_id"]:
                router.clear_exhausted(voucher_id=str(mark["voucher_id"]))
            else:
                router.clear_exhausted(region=region_id)
            cleared.append(str(mark["account"]))
        log.warning("admin: cleared the exhaustion marks of region %s: %s", region_id, cleared or "none")
        return web.json_response({"region": region_id, "cleared": cleared})

    async def clear_voucher(request: web.Request) -> web.Response:
        admin(request)
        voucher_id = request.match_info["id"]
        marked_ids = {str(m["voucher_id"]) for m in router.exhausted() if m["voucher_id"]}
        if all(v.id != voucher_id for v in router.config.vouchers) and voucher_id not in marked_ids:
            raise NotFoundError(f"no voucher {voucher_id!r} in the config", param="id")
        marked = f"voucher:{voucher_id}" in {str(m["account"]) for m in router.exhausted()}
        if marked:
            router.clear_exhausted(voucher_id=voucher_id)
            log.warning("admin: cleared the exhaustion mark of voucher %s", voucher_id)
        cleared = [f"voucher:{voucher_id}"] if marked else []
        return web.json_response({"voucher": voucher_id, "cleared": cleared})

    app.router.add_get("/admin/exhausted", listing)
    app.router.add_post("/admin/regions/{id}/clear", clear_region)
    app.router.add_post("/admin/vouchers/{id}/clear", clear_voucher)
