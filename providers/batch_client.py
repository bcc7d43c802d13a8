"""A region's OpenAI-compatible batch API: upload the input file, create, list, poll, fetch the output.

Every failure leaves as ``UpstreamError`` (``retryable`` for no answer, 429 and 5xx);
aiohttp's own exceptions and the region's API key never leave this module.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from suanli.config import Region
from suanli.providers.errors import UpstreamError

__all__ = ["PlatformBatchClient"]

_TIMEOUT_S = 120.0


class PlatformBatchClient:
    """Calls one region's ``/files`` and ``/batches`` on a shared session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def upload(self, region: Region, base_url: str, data: bytes, filename: str) -> dict:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename=filename, content_type="application/jsonl")
        return await self._json(region, "POST", f"{base_url}/files", data=form)

    async def create(self, region: Region, base_url: str, body: dict) -> dict:
        return await self._json(region, "POST", f"{base_url}/batches", json=body)

    async def list(self, region: Region, base_url: str) -> list[dict]:
        """The region's most recent batches (up to 100)."""
        found = await self._json(region, "GET", f"{base_url}/batches?limit=100")
        data = found.get("data")
        return [b for b in data if isinstance(b, dict)] if isinstance(data, list) else []

    async def retrieve(self, region: Region, base_url: str, batch_id: str) -> dict:
        return await self._json(region, "GET", f"{base_url}/batches/{batch_id}")

    async def content(self, region: Region, base_url: str, file_id: str) -> bytes:
        status, payload = await self._call(region, "GET", f"{base_url}/files/{file_id}/content")
        if status >= 400:
            raise _error(region, status, payload)
        return payload

    async def _json(self, region: Region, method: str, url: str, **send: object) -> dict:
        status, payload = await self._call(region, method, url, **send)
        if status >= 400:
            raise _error(region, status, payload)
        try:
            body = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamError(
                region.id, status, "the batch API answered with no JSON object", retryable=True
            )
        return body

    async def _call(self, region: Region, method: str, url: str, **send: object) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {region.api_key}"} if region.api_key else {}
        if "json" in send:
            send = {"data": orjson.dumps(send.pop("json")), **send}
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                async with self._session.request(method, url, headers=headers, **send) as response:  # type: ignore[arg-type]
                    return response.status, await response.read()
        except TimeoutError as exc:
            raise UpstreamError(region.id, 0, "the batch API did not answer in time", retryable=True) from exc
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
    text = str(message or f"HTTP {status}")
    if region.api_key:
        text = text.replace(region.api_key, "***")
    return UpstreamError(
        region.id,
        status,
        text,
        retryable=status == 429 or status >= 500,
        code=code if isinstance(code, str) and code != region.api_key else None,
    )
