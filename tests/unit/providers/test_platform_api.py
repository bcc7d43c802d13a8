"""The batch and fine-tuning clients' calls: typed errors, and the region's key never in one."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from suanli.config import Offer, Price, Region
from suanli.providers import UpstreamError
from suanli.providers.batch_client import PlatformBatchClient
from suanli.providers.finetune_client import FineTuneClient

KEY = "sk-platform-0123456789abcdefXYZ"


def _region() -> Region:
    offer = Offer(name="chat-model", price=Price(input=1, output=2))
    return Region(id="r", zone="east", provider="sim", models=(offer,), api_key=KEY)


async def _echoing(request: web.Request) -> web.Response:
    """A platform that puts the caller's key in its error's message and code."""
    status = int(request.path.split("/")[1])  # the base URL names the status to answer
    key = request.headers["Authorization"].removeprefix("Bearer ")
    return web.json_response({"error": {"message": f"bad key {key}", "code": key}}, status=status)


@pytest.fixture
async def platform():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echoing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("client_type", [PlatformBatchClient, FineTuneClient])
async def test_an_error_echoing_the_key_is_typed_and_redacted(platform: str, client_type: type):
    async with aiohttp.ClientSession() as session:
        client = client_type(session)
        with pytest.raises(UpstreamError) as refused:
            await client.retrieve(_region(), f"{platform}/400/v1", "job-1")
        with pytest.raises(UpstreamError) as failing:
            await client.list(_region(), f"{platform}/503/v1")
    assert refused.value.status == 400 and not refused.value.retryable
    assert failing.value.status == 503 and failing.value.retryable  # a 5xx may be tried again
    for error in (refused.value, failing.value):
        assert KEY not in str(error) and KEY not in repr(vars(error))
        assert error.code is None  # a key is no code
