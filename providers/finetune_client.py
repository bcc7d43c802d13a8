"""A region's OpenAI-compatible fine-tuning API: upload the training file, create, poll, cancel a job.

Every failure leaves as ``UpstreamError`` (``retryable`` for no answer, 429 and 5xx);
aiohttp's own exceptions and the region's API key never leave this module.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from suanli.config import Region
from suanli.providers.errors import UpstreamError
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
        self._session = session

    async def upload(self, region: Region, base_url: str, data: bytes, filename: str) -> dict:
        form = aiohttp.FormData()
        form.add_field("purpose", "fine-tune")
        form.add_field("file", data, filename=filename, content_type="application/jsonl")
        return await self._call(region, "POST", f"{base_url}/files", data=form)

    async def create(self, region: Region, base_url: str, body: dict) -> dict:
        return await self._call(region, "POST", f"{base_url}/fine_tuning/jobs", json=body)

    async def list(self, region: Region, base_url: str) -> list[dict]:
        """The region's most recent jobs (up to 100)."""
        found = await self._call(region, "GET", f"{base_url}/fine_tuning/jobs?limit=100")
        data = found.get("data")
        return [job for job in data if isinstance(job, dict)] if isinstance(data, list) else []

    async def retrieve(self, region: Region, base_url: str, job_id: str) -> dict:
        return await self._call(region, "GET", f"{base_url}/fine_tuning/jobs/{job_id}")

    async def cancel(self, region: Region, base_url: str, job_id: str) -> dict:
        return await self._call(region, "POST", f"{base_url}/fine_tuning/jobs/{job_id}/cancel")

    async def _call(self, region: Region, method: str, url: str, **send: object) -> dict:
        headers = {"Authorization": f"Bearer {region.api_key}"} if region.api_key else {}
        if "json" in send:
            send = {"data": orjson.dumps(send.pop("json")), **send}
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                async with self._session.request(method, url, headers=headers, **send) as response:  # type: ignore[arg-type]
                    payload = await response.read()
                    status = response.status
        except TimeoutError as exc:
            raise UpstreamError(
                region.id, 0, "the fine-tuning API did not answer in time", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                region.id, 0, f"connection failed: {type(exc).__name__}", retryable=True
            ) from exc
        try:
            body = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            body = {}
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            raise UpstreamError(
                region.id,
                status,
                _redact(str(message or f"HTTP {status}"), region.api_key),
                retryable=status == 429 or status >= 500,
                code=code if isinstance(code, str) else None,
            )
        if not isinstance(body, dict):
            raise UpstreamError(
                region.id, status, "the fine-tuning API answered with no JSON object", retryable=True
            )
        return body


def _redact(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message
