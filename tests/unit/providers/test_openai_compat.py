"""The pass-through's timeouts: no answer, an answer whose body stalls, and a whole answer."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from suanli.config.schema import Offer, Price, Region, Timeouts
from suanli.providers.base import UpstreamCall
from suanli.providers.errors import UpstreamTimeout
from suanli.providers.openai_compat import OpenAICompatUpstream

pytestmark = pytest.mark.timeout(30)

_BODY = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'


async def _upstream(behaviour: str) -> asyncio.Server:
    """A raw HTTP upstream: ``silent`` never answers, ``stall`` sends half its body, ``ok`` all."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if behaviour != "silent":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            head %= len(_BODY)
            writer.write(head + (_BODY if behaviour == "ok" else _BODY[:10]))
            await writer.drain()
        await asyncio.sleep(10)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def _send(behaviour: str) -> object:
    server = await _upstream(behaviour)
    port = server.sockets[0].getsockname()[1]
    region = Region(
        id="wuhan",
        zone="west",
        provider="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        timeouts=Timeouts(connect_s=0.5, first_byte_s=0.3, idle_s=0.2),
        models=(Offer(name="m", price=Price(input=1, output=2)),),
    )
    call = UpstreamCall(region=region, endpoint="chat/completions", body={"model": "m", "messages": []})
    try:
        async with aiohttp.ClientSession() as session:
            return await OpenAICompatUpstream(session).send(call)
    finally:
        server.close()


async def test_no_answer_is_a_first_byte_timeout() -> None:
    with pytest.raises(UpstreamTimeout, match="no answer within"):
        await _send("silent")


async def test_a_body_that_stops_is_a_stalled_answer() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout, match="stalled"):
        await _send("stall")
    # the idle timeout (0.2 s) cut it, not the first-byte one it replaced (0.8 s)
    assert loop.time() - started < 0.7


async def test_a_whole_answer_is_returned_with_its_usage() -> None:
    reply = await _send("ok")
    assert reply.body == _BODY
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 2)
