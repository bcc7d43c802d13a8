"""One region's OpenAI-compatible management API (files, batches, fine-tuning jobs).

Every failure leaves as ``UpstreamError`` (``retryable`` for no answer, 429 and 5xx);
aiohttp's own exceptions and the region's API key never leave this module: a key an upstream
echoes in an error's message or code is redacted.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from suanli.config import Region
from suanli.providers.errors import UpstreamError
from suanli.providers.redaction import redact, safe_code

__all__ = ["PlatformApi"]


class PlatformApi:
    """Calls under one region's base URL on a shared session; ``what`` names the API in errors."""

    def __init__(self, session: aiohttp.ClientSession, *, what: str, timeout_s: float) -> None:
        self._session = session
        self._what = what
        self._timeout_s = timeout_s

    async def upload(self, region: Region, url: str, data: bytes, filename: str, purpose: str) -> dict:
        """POST a JSONL file to ``url`` (a ``/files`` endpoint) with its ``purpose``."""
        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        form.add_field("file", data, filename=filename, content_type="application/jsonl")
        return await self.json(region, "POST", url, data=form)

    async def json(self, region: Region, method: str, url: str, **send: object) -> dict:
        """The JSON object the call answers; ``json=`` sends a body as JSON."""
        status, payload = await self.call(region, method, url, **send)
        if status >= 400:
            raise _error(region, status, payload)
        try:
            body = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamError(
                region.id, status, f"{self._what} answered with no JSON object", retryable=True
            )
        return body

    async def content(self, region: Region, url: str) -> bytes:
        """The raw body of a GET (a file's content)."""
        status, payload = await self.call(region, "GET", url)
        if status >= 400:
            raise _error(region, status, payload)
        return payload

    async def call(self, region: Region, method: str, url: str, **send: object) -> tuple[int, bytes]:
        """(status, body) of one call; no answer in time or no connection is a retryable error."""
        headers = {"Authorization": f"Bearer {region.api_key}"} if region.api_key else {}
        if "json" in send:
            send = {"data": orjson.dumps(send.pop("json")), **send}
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.request(method, url, headers=headers, **send) as response:  # type: ignore[arg-type]
                    return response.status, await response.read()
        except TimeoutError as exc:
            raise UpstreamError(region.id, 0, f"{self._what} did not answer in time", retryable=True) from exc
        except aiohttp.ClientError as exc:
            failed = f"connection failed: {type(exc).__name__}"
            raise UpstreamError(region.id, 0, failed, retryable=True) from exc


def _error(region: Region, status: int, payload: bytes) -> UpstreamError:
    try:
        body = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return UpstreamError(
        region.id,
        status,
        redact(str(message or f"HTTP {status}"), region.api_key),
        retryable=status == 429 or status >= 500,
        code=safe_code(code, region.api_key),
    )
