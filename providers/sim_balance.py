"""A sim's own account: what it charged, and the balance endpoints of DeepSeek, Moonshot and SiliconFlow.

Every answered request is charged at the offer's list price times its time-of-use factor at
the request's start on the platform's clock (the off-peak discount inside its window, or the
first matching band, local time in the config's timezone: the ledger's rule), drawn from the
region's token packages first, then its granted yuan, then the cash: a platform's own order
(it knows a voucher's models and validity, not the router's classes), which the router's
ledger matches when it spends a region's vouchers the same way. ``sim.balance.drift`` makes
the reported figures that share lower than the truth, and ``sim.balance.fail`` makes the
endpoints answer 500, to test reconciliation; both can be changed at runtime through
``POST /sim/faults``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from suanli.config import Offer, SimBehaviour, Voucher

__all__ = ["SimWallet", "add_balance_routes"]


class SimWallet:
    """Units spent at one sim since it started: cash yuan, granted yuan, package tokens.

    The region's vouchers of the config are the platform's own packages: a ``tokens`` voucher
    is a token package, a ``credit`` voucher granted yuan (each for its listed models only); a
    request draws on a package for its model first, then granted yuan, then cash.
    """

    def __init__(self, timezone: str = "Asia/Shanghai", vouchers: Sequence[Voucher] = ()) -> None:
        self.tz = ZoneInfo(timezone)
        self.spent = {"cash_yuan": 0.0, "granted_yuan": 0.0, "tokens": 0.0}
        self.packages = [v for v in vouchers if v.kind in ("tokens", "credit")]
        self._left = {v.id: float(v.amount) for v in self.packages}  # voucher id -> units left

    def charge(
        self,
        behaviour: SimBehaviour,
        offer: Offer,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int = 0,
        price_factor: float = 1.0,
        at_s: float | None = None,
    ) -> None:
        """Charge one answered request (counts in the serving model's tokens, as reported).

        ``cached_tokens`` of the prompt pay the cached input price; ``price_factor`` scales the
        whole (a platform batch's discount); ``at_s`` is the request's start (epoch s; default now).
        """
        now = datetime.now(self.tz) if at_s is None else datetime.fromtimestamp(at_s, self.tz)
        price = offer.price
        fresh = prompt_tokens - cached_tokens
        cost = fresh * price.input + cached_tokens * price.cached_input + completion_tokens * price.output
        cost /= 1e6
        cost *= price_factor
        cost *= _time_of_use(offer, now)
        tokens = prompt_tokens + completion_tokens
        for voucher in self.packages:
            if cost <= 0 or not _usable(voucher, offer.name, now):
                continue
            left = self._left[voucher.id]
            if voucher.kind == "tokens":
                paid = min(left, float(tokens))
                cost -= cost * paid / tokens if tokens else 0.0
                tokens -= int(paid)
                self.spent["tokens"] += paid
            else:
                paid = min(left, cost)
                cost -= paid
                self.spent["granted_yuan"] += paid
            self._left[voucher.id] = left - paid
        self.spent["cash_yuan"] += cost

    def figures(self, behaviour: SimBehaviour) -> dict[str, float]:
        """What the sim reports now per unit (drift applied)."""
        keep = 1.0 - behaviour.balance.drift
        start_tokens = sum(v.amount for v in self.packages if v.kind == "tokens")
        start_granted = sum(v.amount for v in self.packages if v.kind == "credit")
        return {
            "cash_yuan": (behaviour.balance.cash_yuan - self.spent["cash_yuan"]) * keep,
            "granted_yuan": (start_granted - self.spent["granted_yuan"]) * keep,
            "tokens": (start_tokens - self.spent["tokens"]) * keep,
        }


def _usable(voucher: Voucher, model: str, now: datetime) -> bool:
    if voucher.models is not None and model not in voucher.models:
        return False
    if voucher.valid_from is not None and now < voucher.valid_from:
        return False
    return voucher.expires is None or now < voucher.expires


def _inside(window: tuple[int, int], now: datetime) -> bool:
    start, end = window
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start <= end else minute >= start or minute < end


def _time_of_use(offer: Offer, now: datetime) -> float:
    # DESIGN.md's rule, as ``optimizer.tariff.factor_at`` has it (providers do not import the
    # optimizer): off_peak's window every day, else the first band whose window, opened on one
    # of its days, holds ``now`` (local); a window crossing midnight belongs to the day it opens
    if offer.off_peak is not None:
        return 1 - offer.off_peak.discount if _inside(offer.off_peak.minutes(), now) else 1.0
    minute, weekday = now.hour * 60 + now.minute, now.weekday()
    for band in offer.bands or ():
        begin, end = band.minutes()
        days = band.weekdays()
        if begin < end:
            if begin <= minute < end and weekday in days:
                return band.factor
        elif (minute >= begin and weekday in days) or (minute < end and (weekday - 1) % 7 in days):
            return band.factor
    return 1.0


def add_balance_routes(
    app: web.Application, read: web.AppKey, check_auth: Callable[[web.Request], None]
) -> None:
    """``GET /user/balance`` (DeepSeek), ``/v1/users/me/balance`` (Moonshot), ``/v1/user/info``
    (SiliconFlow); ``read`` is the app key of a ``(behaviour, wallet)`` getter."""

    def figures(request: web.Request) -> dict[str, float]:
        check_auth(request)
        behaviour, wallet = request.app[read]()
        if behaviour.balance.fail:
            raise web.HTTPInternalServerError(text='{"error": "balance service unavailable"}')
        return wallet.figures(behaviour)

    async def deepseek(request: web.Request) -> web.Response:
        f = figures(request)
        total = f["cash_yuan"] + f["granted_yuan"]
        info = {
            "currency": "CNY",
            "total_balance": f"{total:.6f}",
            "granted_balance": f"{f['granted_yuan']:.6f}",
            "topped_up_balance": f"{f['cash_yuan']:.6f}",
        }
        return web.json_response({"is_available": total > 0, "balance_infos": [info]})

    async def moonshot(request: web.Request) -> web.Response:
        f = figures(request)
        data = {"available_balance": f["cash_yuan"] + f["granted_yuan"], "voucher_balance": f["granted_yuan"],
                "cash_balance": f["cash_yuan"]}
        return web.json_response({"code": 0, "data": data, "scode": "0x0", "status": True})

    async def siliconflow(request: web.Request) -> web.Response:
        f = figures(request)
        data = {"id": "sim", "balance": f"{f['granted_yuan']:.6f}", "chargeBalance": f"{f['cash_yuan']:.6f}",
                "totalBalance": f"{f['cash_yuan'] + f['granted_yuan']:.6f}", "tokens": f["tokens"]}
        return web.json_response({"code": 20000, "message": "OK", "status": True, "data": data})

    app.router.add_get("/user/balance", deepseek)
    app.router.add_get("/v1/users/me/balance", moonshot)
    app.router.add_get("/v1/user/info", siliconflow)
