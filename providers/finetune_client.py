"""A region's OpenAI-compatible fine-tuning API: upload the training file, create, poll, cancel a job.

Every failure leaves as ``UpstreamError`` (``providers.platform_api``).
"""

from __future__ import annotations

import aiohttp
import orjson

from suanli.config import Region
from suanli.providers.platform_api import PlatformApi
from suanli.providers.tokenizer import count_message_tokens, count_tokens

__all__ = ["FineTuneClient", "training_tokens"]

_TIMEOUT_S = 60.0


def training_tokens(data: bytes) -> int:
    """Reference tokens of one epoch over a training JSONL (chat ``messages`` or prompt/completion)."""
    total = 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        messages = item.get("messages")
        if isinstance(messages, list):
            total += count_message_tokens(messages)
        else:
            total += sum(
                count_tokens(item[k]) for k in ("prompt", "completion") if isinstance(item.get(k), str)
            )
    return total


class FineTuneClient:
    """Calls one region's ``/files`` and ``/fine_tuning/jobs`` on a shared session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._api = PlatformApi(session, what="the fine-tuning API", timeout_s=_TIMEOUT_S)

    async def upload(self, region: Region, base_url: str, data: bytes, filename: str) -> dict:
        return await self._api.upload(region, f"{base_url}/files", data, filename, "fine-tune")

    async def create(self, region: Region, base_url: str, body: dict) -> dict:
        return await self._api.json(region, "POST", f"{base_url}/fine_tuning/jobs", json=body)

    async def list(self, region: Region, base_url: str) -> list[dict]:
        """The region's most recent jobs (up to 100)."""
        found = await self._api.json(region, "GET", f"{base_url}/fine_tuning/jobs?limit=100")
        data = found.get("data")
        return [job for job in data if isinstance(job, dict)] if isinstance(data, list) else []

    async def retrieve(self, region: Region, base_url: str, job_id: str) -> dict:
        return await self._api.json(region, "GET", f"{base_url}/fine_tuning/jobs/{job_id}")

    async def cancel(self, region: Region, base_url: str, job_id: str) -> dict:
        return await self._api.json(region, "POST", f"{base_url}/fine_tuning/jobs/{job_id}/cancel")
