"""Upstream adapter for regions whose ``provider`` is a litellm provider prefix.

``provider: deepseek`` (or dashscope, moonshot, volcengine, zai, ...) sends the call through
``litellm.acompletion`` / ``atext_completion`` / ``aembedding`` with
``model="<provider>/<upstream model>"``. litellm is imported on the first call, in a worker
thread (the import takes seconds), never at module import. Answers are turned back into
OpenAI JSON / SSE bytes, and every litellm exception becomes an UpstreamError here: none
leaves providers/, and no message we build carries the API key.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from types import ModuleType

import orjson

from suanli.providers.base import Reply, StreamReply, UpstreamCall, Usage
from suanli.providers.errors import ProviderError, UpstreamBroken, UpstreamError, UpstreamTimeout
from suanli.providers.redaction import safe_code

__all__ = ["LiteLLMUpstream", "load_litellm", "scrub", "translate_error", "warm_up"]

# Statuses after which another region may be tried (as in the pass-through adapter).
# 401/403: the region refused *our* key for it; another region may still serve the request.
_RETRYABLE_STATUS = frozenset({401, 402, 403, 408, 409, 429, 500, 502, 503, 504})
# litellm additions to OpenAI's JSON that clients should not see.
_DROP_KEYS = frozenset({"provider_specific_fields", "cost"})
# Body fields the adapter sets itself.
_OWN_FIELDS = frozenset({"model", "stream", "stream_options"})
_MAX_MESSAGE = 500
_TOKENISH = re.compile(r"(Bearer\s+)\S+|\bsk-[A-Za-z0-9_\-]{6,}", re.IGNORECASE)

_load_lock = threading.Lock()
_litellm: ModuleType | None = None
_warming: threading.Thread | None = None


def load_litellm() -> ModuleType:
    """Import and configure litellm once (blocking: call it from a worker thread)."""
    global _litellm
    with _load_lock:
        if _litellm is None:
            # Use the bundled cost map instead of fetching one from GitHub at import.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            # httpx rather than litellm's default aiohttp transport: one well-trodden client
            # path, and tests can intercept it with respx instead of monkeypatching.
            litellm.disable_aiohttp_transport = True
            # Otherwise litellm prints a "Give Feedback / Get Help" banner on every error.
            litellm.suppress_debug_info = True
            _litellm = litellm
        return _litellm


def warm_up() -> threading.Thread | None:
    """Import litellm in a background thread now (seconds), so the first request through a
    litellm region does not wait for it; None when it is loaded or loading already."""
    global _warming
    with _load_lock:
        if _litellm is not None or _warming is not None:
            return None
        _warming = threading.Thread(target=load_litellm, name="litellm-import", daemon=True)
    _warming.start()
    return _warming


class LiteLLMUpstream:
    """Sends calls through litellm; the router fails over, so litellm itself never retries.

    ``drop_params``: let litellm drop OpenAI parameters the provider does not take
    (``user``, ``logit_bias``, ...) instead of failing the request.
    """

    def __init__(self, *, drop_params: bool = True) -> None:
        self._drop_params = drop_params

    async def close(self) -> None:
        """litellm keeps its clients in a module-level cache; release them if it was loaded."""
        closer = getattr(_litellm, "close_litellm_async_clients", None) if _litellm else None
        if closer is not None:
            await closer()

    async def send(self, call: UpstreamCall) -> Reply | StreamReply:
        litellm = _litellm or await asyncio.to_thread(load_litellm)
        region = call.region
        secret = call.api_key or region.api_key
        streaming = call.stream and call.endpoint != "embeddings"
        params = self._params(call, secret, streaming)
        function = {
            "chat/completions": litellm.acompletion,
            "completions": litellm.atext_completion,
            "embeddings": litellm.aembedding,
        }[call.endpoint]
        timeouts = region.timeouts
        started = time.perf_counter()
        first_byte_s = timeouts.first_byte_s if streaming else timeouts.whole_answer_s(call.output_tokens)
        try:
            async with asyncio.timeout(timeouts.connect_s + first_byte_s):
                result = await function(**params)
        except TimeoutError as exc:
            raise UpstreamTimeout(  # it may still be generating: in doubt (providers/errors.py)
                region.id, 0, f"no answer within {first_byte_s:g} s", retryable=True, in_doubt=True
            ) from exc
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - litellm's exception surface is open-ended
            # "from None": litellm's own message may quote the key (a 401 echoing it).
            raise translate_error(exc, region.id, secret, litellm) from None
        if streaming:
            return await _open_stream(result, call, secret, litellm, started)
        data = _openai_shape(result.model_dump(exclude_none=True))
        elapsed = time.perf_counter() - started
        return Reply(status=200, body=orjson.dumps(data), usage=_usage(data), ttft_s=None, total_s=elapsed)

    def _params(self, call: UpstreamCall, secret: str | None, streaming: bool) -> dict:
        region = call.region
        params = {k: v for k, v in call.body.items() if k not in _OWN_FIELDS}
        timeouts = region.timeouts
        params.update(
            model=f"{region.provider}/{call.body['model']}",
            api_key=secret,
            max_retries=0,
            num_retries=0,
            # A backstop for litellm's own client; the adapter's asyncio timeouts come first.
            timeout=timeouts.connect_s + timeouts.whole_answer_s(call.output_tokens) + timeouts.idle_s,
            drop_params=self._drop_params,
        )
        if region.base_url:
            params["api_base"] = region.base_url
        if streaming:
            # Always ask for usage, to settle the ledger; the chunk is dropped again below
            # when the client did not ask for it.
            options = call.body.get("stream_options")
            params["stream"] = True
            params["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return params


async def _open_stream(
    wrapper: object, call: UpstreamCall, secret: str | None, litellm: ModuleType, started: float
) -> StreamReply:
    region = call.region
    usage = Usage()
    events = _relay(wrapper, call, usage, secret, litellm)
    try:
        async with asyncio.timeout(region.timeouts.first_byte_s):
            first = await anext(events)
    except TimeoutError as exc:
        await events.aclose()
        raise UpstreamTimeout(
            region.id, 0, "no first chunk before the timeout", retryable=True, in_doubt=True
        ) from exc
    except UpstreamBroken as exc:
        await events.aclose()
        # Nothing reached the client yet: the failure is as retryable as any other.
        raise UpstreamError(
            region.id,
            exc.status,
            exc.message,
            retryable=exc.retryable,
            retry_after_s=exc.retry_after_s,
            code=exc.code,
        ) from None
    except StopAsyncIteration:
        raise UpstreamError(region.id, 0, "empty stream", retryable=True) from None
    return StreamReply(
        status=200, chunks=_prepend(first, events), usage=usage, ttft_s=time.perf_counter() - started
    )


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


async def _relay(
    wrapper: object, call: UpstreamCall, usage: Usage, secret: str | None, litellm: ModuleType
) -> AsyncGenerator[bytes, None]:
    """litellm's chunk objects as OpenAI SSE bytes; records usage on the way."""
    region = call.region
    iterator = wrapper.__aiter__()  # type: ignore[attr-defined]
    chunks = 0
    try:
        while True:
            try:
                async with asyncio.timeout(region.timeouts.idle_s):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise UpstreamBroken(region.id, 0, "the stream went idle", retryable=False) from exc
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - see send()
                error = translate_error(exc, region.id, secret, litellm)
                raise UpstreamBroken(
                    region.id, error.status, error.message, retryable=error.retryable, code=error.code
                ) from None
            data = _openai_shape(chunk.model_dump(exclude_none=True))
            found = _usage(data)
            if found.reported:
                usage.prompt_tokens, usage.completion_tokens, usage.reported = (
                    found.prompt_tokens,
                    found.completion_tokens,
                    True,
                )
                if not data.get("choices") and not call.wants_usage:
                    continue
            elif not usage.reported:
                chunks += 1
                # A running count, so a broken stream still settles roughly what was sent.
                usage.completion_tokens = chunks
            yield b"data: " + orjson.dumps(data) + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        aclose = getattr(wrapper, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - closing a broken upstream must not mask its error
                pass


def _openai_shape(data: object) -> object:
    """Drop litellm's additions and restore the keys OpenAI always sends."""
    if isinstance(data, list):
        return [_openai_shape(item) for item in data]
    if not isinstance(data, dict):
        return data
    shaped = {k: _openai_shape(v) for k, v in data.items() if k not in _DROP_KEYS}
    for choice in shaped.get("choices") or ():
        if isinstance(choice, dict):
            choice.setdefault("finish_reason", None)
            choice.setdefault("logprobs", None)
            if "message" in choice and isinstance(choice["message"], dict):
                choice["message"].setdefault("content", None)
            elif shaped.get("object") == "text_completion":
                choice.setdefault("text", "")
    return shaped


def _usage(data: object) -> Usage:
    raw = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        return Usage()
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        reported=True,
    )


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the key, its tail (some platforms echo it) or anything key-shaped."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
        if len(secret) > 8:
            text = text.replace(secret[-8:], "***")
    return _TOKENISH.sub(lambda m: (m.group(1) or "") + "***", text)


def _upstream_detail(text: str) -> tuple[str, str | None]:
    """The upstream's own error message and code, when litellm quoted its JSON body."""
    start = text.find("{")
    if start >= 0:
        try:
            error = orjson.loads(text[start:]).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if isinstance(error, dict):
            # The code only (its ``type`` is the upstream's classification); translate_error vets it.
            code = error.get("code")
            return str(error.get("message") or text), str(code) if code else None
        if isinstance(error, str):
            return error, None
    return text.removeprefix("litellm."), None


def _retry_after_s(headers: object) -> float | None:
    if not isinstance(headers, dict):
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return max(float(lowered[name]) / scale, 0.0)
        except (KeyError, TypeError, ValueError):
            continue
    return None


def translate_error(
    exc: BaseException, region: str, secret: str | None, litellm: ModuleType
) -> UpstreamError:
    """One litellm (or httpx) exception as an UpstreamError with status, retryability, code."""
    if isinstance(exc, litellm.Timeout):
        return UpstreamTimeout(region, 0, "the upstream timed out", retryable=True, in_doubt=True)
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) and 100 <= status <= 599 else 0
    detail, code = _upstream_detail(str(exc))
    message = scrub(f"{type(exc).__name__}: {detail}", secret)[:_MAX_MESSAGE]
    lowered = message.lower()
    if status == 402 or "insufficient_quota" in lowered or "insufficient balance" in lowered:
        code = "insufficient_quota"
    elif code is None and "context" in lowered and "length" in lowered:
        code = "context_length_exceeded"
    return UpstreamError(
        region,
        status,
        message,
        retryable=status == 0 or status in _RETRYABLE_STATUS or status >= 500,
        retry_after_s=_retry_after_s(getattr(exc, "litellm_response_headers", None)),
        code=safe_code(code, secret),
    )
