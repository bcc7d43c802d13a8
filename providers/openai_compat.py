"""OpenAI-compatible pass-through on one pooled aiohttp session.

Bodies go out as the client sent them (model renamed, usage requested when streaming);
answers come back as bytes and streams are relayed event by event, never buffered whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson

from suanli.providers.base import Reply, StreamReply, UpstreamCall, Usage
from suanli.providers.errors import UpstreamBroken, UpstreamError, UpstreamTimeout
from suanli.providers.redaction import redact, redact_bytes, safe_code, safe_param

__all__ = ["OpenAICompatUpstream", "cached_tokens_of", "parse_usage", "redact"]

# 401/403: the region refused *our* key for it; another region may still serve the request.
_RETRYABLE_STATUS = frozenset({401, 402, 403, 408, 409, 429, 500, 502, 503, 504})
_MAX_ERROR_BODY = 64 * 1024


class OpenAICompatUpstream:
    """Sends calls to any OpenAI-compatible base URL (a city platform or a sim)."""

    def __init__(self, session: aiohttp.ClientSession, *, base_urls: dict[str, str] | None = None) -> None:
        self._session = session
        # region id -> base URL, for regions whose URL is only known at run time (sims)
        self._base_urls = base_urls or {}

    async def close(self) -> None:
        """The session belongs to the app; nothing of our own to close."""

    async def send(self, call: UpstreamCall) -> Reply | StreamReply:
        region = call.region
        base = self._base_urls.get(region.id) or region.base_url
        if not base:
            raise UpstreamError(region.id, 0, "region has no base_url", retryable=True)
        body = call.body
        if call.stream and call.endpoint != "embeddings":
            body = {
                **body,
                "stream": True,
                "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
            }
        headers = {"Content-Type": "application/json"}
        secret = call.api_key or region.api_key
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        timeouts = region.timeouts
        started = time.perf_counter()
        streamed = call.stream and call.endpoint != "embeddings"
        answered = False  # the status line arrived: a timeout from here on is a stalled answer
        payload = b""
        try:
            # One timer for both waits (a timer costs as much as a ledger statement): first byte,
            # then rescheduled to the idle timeout while a whole answer is read.
            first_byte_s = timeouts.first_byte_s if streamed else timeouts.whole_answer_s(call.output_tokens)
            async with asyncio.timeout(first_byte_s + timeouts.connect_s) as waiting:
                response = await self._session.post(
                    f"{base.rstrip('/')}/{call.endpoint}",
                    data=orjson.dumps(body),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s),
                )
                answered = True
                if response.status < 400 and not streamed:
                    waiting.reschedule(asyncio.get_running_loop().time() + timeouts.idle_s)
                    payload = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            # A timeout once connected (sock_connect gives up first otherwise) leaves the request
            # with an upstream that may still be generating it: in doubt, never silently voided.
            if answered:
                response.release()
                raise UpstreamTimeout(
                    region.id, 0, "the answer stalled", retryable=True, in_doubt=True
                ) from exc
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    region.id, 0, f"no answer within {first_byte_s:g} s", retryable=True, in_doubt=True
                ) from exc
            raise UpstreamError(
                region.id, 0, f"connection failed: {type(exc).__name__}", retryable=True
            ) from exc
        if response.status >= 400:
            raise await _error_from(response, region.id, secret)
        if streamed:
            return await self._open_stream(response, call, started, secret)
        # Its whole time is no time to first token (the interactive rule must not read it as one).
        return Reply(
            status=response.status,
            body=redact_bytes(payload, secret),
            usage=parse_usage(payload),
            ttft_s=None,
            total_s=time.perf_counter() - started,
        )

    async def _open_stream(
        self, response: aiohttp.ClientResponse, call: UpstreamCall, started: float, secret: str | None
    ) -> StreamReply:
        region = call.region
        usage = Usage()
        events = _events(response, region.id, region.timeouts.idle_s, usage, call.wants_usage, secret)
        try:
            async with asyncio.timeout(region.timeouts.first_byte_s):
                first = await events.__anext__()
        except TimeoutError as exc:
            await events.aclose()
            raise UpstreamTimeout(
                region.id, 0, "no first chunk before the timeout", retryable=True, in_doubt=True
            ) from exc
        except UpstreamBroken as exc:
            await events.aclose()
            # Nothing reached the client yet, so another region may still be tried.
            raise UpstreamError(region.id, 0, exc.message, retryable=True) from exc
        except StopAsyncIteration as exc:
            raise UpstreamError(region.id, 0, "empty stream", retryable=True) from exc
        return StreamReply(
            status=response.status,
            chunks=_prepend(first, events),
            usage=usage,
            ttft_s=time.perf_counter() - started,
        )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _events(
    response: aiohttp.ClientResponse,
    region: str,
    idle_s: float,
    usage: Usage,
    wants_usage: bool,
    secret: str | None,
) -> AsyncIterator[bytes]:
    """SSE events as bytes; captures usage and drops the usage chunk the client did not ask for.

    An upstream error event is never relayed: it ends the stream as UpstreamBroken with the
    upstream's message redacted (the relay sends the router's own error event), so nothing the
    upstream put in it (its key in ``code``, say) reaches the client. Any event holding the
    key has it masked.

    Everything one network read brings is parsed at once and yielded as one chunk of whole
    events (``data: [DONE]`` always alone), so the relay writes once per read, not once per
    token: a syscall per event was the largest cost of a streamed request.
    """
    content = response.content
    buffer: list[bytes] = []  # lines of the event being read
    tail = b""  # bytes after the last newline
    chunks = 0
    try:
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    data = await content.readany()
            except TimeoutError as exc:
                raise UpstreamBroken(region, 0, "the stream went idle", retryable=False) from exc
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise UpstreamBroken(region, 0, "the stream broke", retryable=False) from exc
            if not data:
                if buffer or tail.strip():
                    raise UpstreamBroken(region, 0, "the stream ended mid-event", retryable=False)
                return
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            out: list[bytes] = []
            for line in lines:
                if line and line != b"\r":
                    buffer.append(line + b"\n")
                    continue
                if not buffer:
                    continue
                event = b"".join(buffer)
                buffer.clear()
                if event.startswith(b"data: [DONE]"):
                    if out:
                        yield b"".join(out)
                        out = []
                    yield b"data: [DONE]\n\n"
                    continue
                if b'"error"' in event:
                    _raise_error_event(event, region, secret)
                if b'"usage"' in event and b'"usage":null' not in event.replace(b" ", b""):
                    parsed = orjson.loads(event[event.index(b"{") :])
                    found = _usage_of(parsed)
                    if found is not None:
                        usage.prompt_tokens, usage.completion_tokens = found
                        usage.cached_tokens = cached_tokens_of(parsed, found[0])
                        usage.reported = True
                        if not parsed.get("choices") and not wants_usage:
                            continue
                else:
                    chunks += 1
                    if not usage.reported:
                        # Keep a running count so a broken stream still settles what was sent.
                        usage.completion_tokens = chunks
                out.append(event.rstrip(b"\r\n") + b"\n\n")
            if out:
                yield redact_bytes(b"".join(out), secret)
    finally:
        response.release()


def _raise_error_event(event: bytes, region: str, secret: str | None) -> None:
    """UpstreamBroken for an SSE event ``{"error": {...}}``; returns for any other event."""
    try:
        parsed = orjson.loads(event[event.index(b"{") :])
    except (ValueError, orjson.JSONDecodeError):
        return
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if error is None:
        return
    message = error.get("message") if isinstance(error, dict) else error
    detail = redact(str(message or "an error event"), secret)[:500]
    raise UpstreamBroken(
        region,
        0,
        f"the upstream sent an error mid-stream: {detail}",
        retryable=False,
        code=safe_code(error.get("code"), secret) if isinstance(error, dict) else None,
    )


def _usage_of(data: dict) -> tuple[int, int] | None:
    raw = data.get("usage")
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    return prompt, completion


def cached_tokens_of(data: dict, prompt_tokens: int) -> int:
    """``usage.prompt_tokens_details.cached_tokens`` of an answer, within ``[0, prompt_tokens]``."""
    raw = data.get("usage")
    details = raw.get("prompt_tokens_details") if isinstance(raw, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, bool) or not isinstance(cached, int | float):
        return 0
    return int(min(max(cached, 0), prompt_tokens))


def parse_usage(payload: bytes) -> Usage:
    """Usage from a whole JSON answer; ``reported=False`` when the upstream gave none."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Usage()
    found = _usage_of(data) if isinstance(data, dict) else None
    if found is None:
        return Usage()
    cached = cached_tokens_of(data, found[0])
    return Usage(prompt_tokens=found[0], completion_tokens=found[1], reported=True, cached_tokens=cached)


async def _error_from(response: aiohttp.ClientResponse, region: str, secret: str | None) -> UpstreamError:
    status = response.status
    try:
        raw = await response.content.read(_MAX_ERROR_BODY)
    except aiohttp.ClientError:
        raw = b""
    finally:
        response.release()
    message, code, param = f"upstream answered {status}", None, None
    try:
        error = orjson.loads(raw).get("error")
        if isinstance(error, dict):
            message = redact(str(error.get("message") or message), secret)
            # The code only: the upstream's ``type`` is its classification, ours is the router's.
            code, param = safe_code(error.get("code"), secret), safe_param(error.get("param"), secret)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if status == 402 and code is None:
        code = "insufficient_quota"
    retry_after = _retry_after(response.headers.get("Retry-After"))
    return UpstreamError(
        region,
        status,
        message,
        # A region without the model is a region (config) mismatch: another region may have it.
        retryable=status in _RETRYABLE_STATUS or (status == 404 and code == "model_not_found"),
        retry_after_s=retry_after,
        code=code,
        param=param,
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
