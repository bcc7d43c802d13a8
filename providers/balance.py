"""Read a platform's own balance: DeepSeek, Moonshot, SiliconFlow, or a configured path and fields.

Units are kept apart: ``cash_yuan`` (money topped up), ``granted_yuan`` (gift or voucher yuan),
``tokens`` (a token package); a unit the platform does not report is absent, never 0. Any
failure (no answer, an error status, a body without the fields) raises BalanceQueryError,
whose message never carries the region's key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from suanli.config import Region
from suanli.providers.errors import ProviderError
from suanli.providers.openai_compat import redact

__all__ = ["BalanceQueryError", "PlatformBalance", "balance_url", "query_balance", "read_fields"]

# api -> (path at the base URL's root, unit -> dotted JSON path)
_KNOWN: dict[str, tuple[str, dict[str, str]]] = {
    "deepseek": (
        "/user/balance",
        {"cash_yuan": "balance_infos.0.topped_up_balance", "granted_yuan": "balance_infos.0.granted_balance"},
    ),
    "moonshot": (
        "/v1/users/me/balance",
        {"cash_yuan": "data.cash_balance", "granted_yuan": "data.voucher_balance"},
    ),
    "siliconflow": ("/v1/user/info", {"cash_yuan": "data.chargeBalance", "granted_yuan": "data.balance"}),
}


class BalanceQueryError(ProviderError):
    """The platform's balance could not be read; ``message`` is safe to show."""

    def __init__(self, region: str, message: str) -> None:
        super().__init__(f"region {region}: {message}")
        self.region = region
        self.message = message


@dataclass(frozen=True, slots=True)
class PlatformBalance:
    """What a platform said its balance is, per unit it reported."""

    region: str
    figures: dict[str, float]  # unit -> amount: cash_yuan, granted_yuan, tokens


def balance_url(region: Region, base_url: str | None) -> tuple[str, dict[str, str]]:
    """``(URL, unit -> JSON path)`` of the region's balance endpoint; ValueError when there is none."""
    source = region.balance
    if source is None or source.api == "manual":
        raise ValueError(f"region {region.id} has no balance API")
    if source.api in _KNOWN:
        path, fields = _KNOWN[source.api]
    else:
        path = source.path or ""
        fields = {}
    if source.fields is not None:
        fields = {**fields, **{k: v for k, v in source.fields.model_dump().items() if v}}
    if source.url is not None:
        return source.url, fields
    if not base_url:
        raise ValueError(f"region {region.id} has no base_url to find its balance API at")
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), fields


def read_fields(data: object, fields: dict[str, str]) -> dict[str, float]:
    """Unit -> amount at each dotted path (list items by index); a path not found is left out."""
    out: dict[str, float] = {}
    for unit, path in fields.items():
        value = data
        for step in path.split("."):
            if isinstance(value, dict):
                value = value.get(step)
            elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
                value = value[int(step)]
            else:
                value = None
                break
        if isinstance(value, bool) or value is None:
            continue
        try:
            out[unit] = float(value)  # platforms send numbers or decimal strings
        except (TypeError, ValueError):
            continue
    return out


async def query_balance(
    session: aiohttp.ClientSession, region: Region, base_url: str | None
) -> PlatformBalance:
    """The platform's balance now; BalanceQueryError on any failure (the caller shows "unknown")."""
    source = region.balance
    if source is None:
        raise BalanceQueryError(region.id, "no balance: block")
    try:
        url, fields = balance_url(region, base_url)
    except ValueError as exc:
        raise BalanceQueryError(region.id, str(exc)) from exc
    headers = {"Authorization": f"Bearer {region.api_key}"} if region.api_key else {}
    try:
        async with asyncio.timeout(source.timeout_s):
            async with session.get(url, headers=headers) as response:
                raw = await response.read()
                status = response.status
    except TimeoutError as exc:
        raise BalanceQueryError(region.id, "the balance query timed out") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise BalanceQueryError(region.id, f"the balance query failed: {type(exc).__name__}") from exc
    if status != 200:
        text = redact(raw[:200].decode(errors="replace"), region.api_key)
        raise BalanceQueryError(region.id, f"the balance endpoint answered {status}: {text}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BalanceQueryError(region.id, "the balance endpoint did not answer JSON") from exc
    figures = read_fields(data, fields)
    if not figures:
        raise BalanceQueryError(region.id, f"no balance field found ({', '.join(fields.values())})")
    return PlatformBalance(region.id, figures)
