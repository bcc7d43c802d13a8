"""A region's OpenAI-compatible batch API: upload the input file, create, list, poll, fetch the output.

Every failure leaves as ``UpstreamError`` (``providers.platform_api``).
"""

from __future__ import annotations

import aiohttp

from suanli.config import Region
from suanli.providers.platform_api import PlatformApi

__all__ = ["PlatformBatchClient"]

_TIMEOUT_S = 120.0


class PlatformBatchClient:
    """Calls one region's ``/files`` and ``/batches`` on a shared session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._api = PlatformApi(session, what="the batch API", timeout_s=_TIMEOUT_S)

    async def upload(self, region: Region, base_url: str, data: bytes, filename: str) -> dict:
        return await self._api.upload(region, f"{base_url}/files", data, filename, "batch")

    async def create(self, region: Region, base_url: str, body: dict) -> dict:
        return await self._api.json(region, "POST", f"{base_url}/batches", json=body)

    async def list(self, region: Region, base_url: str) -> list[dict]:
        """The region's most recent batches (up to 100)."""
        found = await self._api.json(region, "GET", f"{base_url}/batches?limit=100")
        data = found.get("data")
        return [b for b in data if isinstance(b, dict)] if isinstance(data, list) else []

    async def retrieve(self, region: Region, base_url: str, batch_id: str) -> dict:
        return await self._api.json(region, "GET", f"{base_url}/batches/{batch_id}")

    async def content(self, region: Region, base_url: str, file_id: str) -> bytes:
        return await self._api.content(region, f"{base_url}/files/{file_id}/content")
