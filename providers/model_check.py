"""``suanli config check --probe``: ask each region's ``GET /models`` what it serves.

One call per region, with the region's key, and a verdict: ``ok``; ``unknown_models`` (an
offer's upstream name the platform does not list: every request for it would answer 400 or
404); ``bad_key`` (401/403); ``unreachable`` (no connection, TLS error, timeout); ``error``
(any other status, or an answer that is not a model list). The key is sent as the serving path
sends it and never appears in a verdict: messages are built from statuses and exception types,
and anything the platform says is scrubbed of the key before it is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
import orjson

from suanli.config import Region

__all__ = ["ModelCheck", "check_models", "check_regions"]

_MAX_SHOWN = 8  # served model names listed in a verdict


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """What one region's ``/models`` said: ``verdict`` and a one-line ``detail`` with no secret."""

    region: str
    url: str
    verdict: str  # ok | unknown_models | bad_key | unreachable | error
    status: int  # 0 when no answer came
    detail: str
    unknown: tuple[str, ...] = ()  # offers' upstream names the platform does not serve


async def check_models(
    session: aiohttp.ClientSession, region: Region, base_url: str, *, timeout_s: float = 10.0
) -> ModelCheck:
    """Call ``GET {base_url}/models`` for ``region`` and judge the answer."""
    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {region.api_key}"} if region.api_key else {}
    secret = region.api_key or ""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                status = response.status
                body = await response.read()
    except TimeoutError:
        return ModelCheck(region.id, url, "unreachable", 0, f"no answer within {timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return ModelCheck(region.id, url, "unreachable", 0, _scrub(_reason(exc), secret))
    if status in (401, 403):
        hint = "no api_key is set" if not region.api_key else "the platform refused the key"
        return ModelCheck(region.id, url, "bad_key", status, f"{status}: {hint}")
    if status != 200:
        said = _scrub(_text(body), secret)
        return ModelCheck(region.id, url, "error", status, f"answered {status}: {said}")
    served = _served(body)
    if served is None:
        return ModelCheck(region.id, url, "error", status, "answered 200 but not an OpenAI model list")
    wanted = [offer.upstream_name for offer in region.models]
    unknown = tuple(name for name in wanted if name not in served)
    if unknown:
        listed = ", ".join(sorted(served)[:_MAX_SHOWN]) + (" ..." if len(served) > _MAX_SHOWN else "")
        detail = f"does not serve {', '.join(unknown)} (it lists {len(served)}: {listed or 'none'})"
        return ModelCheck(region.id, url, "unknown_models", status, _scrub(detail, secret), unknown)
    return ModelCheck(region.id, url, "ok", status, f"serves all {len(wanted)} model(s) of the config")


async def check_regions(
    targets: Iterable[tuple[Region, str]], *, timeout_s: float = 10.0
) -> list[ModelCheck]:
    """Check every ``(region, base_url)`` at once, on one session; results in the given order."""
    async with aiohttp.ClientSession() as session:
        return list(
            await asyncio.gather(
                *(check_models(session, region, url, timeout_s=timeout_s) for region, url in targets)
            )
        )


def _served(body: bytes) -> set[str] | None:
    try:
        data = orjson.loads(body)
        return {str(item["id"]) for item in data["data"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _reason(exc: BaseException) -> str:
    # The exception's class and its OS-level cause; never the request (it has the headers).
    cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
    text = getattr(cause, "strerror", None) or str(cause)
    return f"{type(exc).__name__}: {text}"[:200]


def _text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        error = orjson.loads(body).get("error")
        text = error.get("message", text) if isinstance(error, dict) else text
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return " ".join(text.split())[:200]


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if len(secret) >= 4 else text
