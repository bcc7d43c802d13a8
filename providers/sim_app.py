"""A simulated city platform: a real OpenAI-compatible aiohttp server with fault knobs.

OpenAI endpoints (``Authorization: Bearer <key>`` required only when the region has an
``api_key``; ``model`` is the offer's upstream name):

    POST /v1/chat/completions   stream and not; ``stream_options.include_usage``
    POST /v1/completions        stream and not; ``prompt`` str, [str], [int] or [[int]]
    POST /v1/embeddings         ``dimensions`` (default 1024), ``encoding_format`` float|base64
    /v1/files, /v1/batches      a platform batch API (``providers/sim_batches.py``), with ``batch_api``
    GET  /v1/models, GET /v1/models/{id}

Control endpoints, on the sim only and without auth, for fault tests:

    GET    /sim/faults   the current knobs
    POST   /sim/faults   partial update: any SimBehaviour field, ``ttft_ms``, ``latency_scale``
    DELETE /sim/faults   back to the region's configured behaviour
    GET    /sim/stats    counters: requests, status_<code>, resets, disconnects

Answers are deterministic (a function of region, model and prompt). An answer is
``max_completion_tokens`` / ``max_tokens`` tokens long when given (``finish_reason:
length``), else 16-64 (``stop``); usage reports exactly the tokens generated, and the
prompt as ``ceil(reference tokens x token_ratio)``; a chat prompt whose leading messages
repeat one seen within the offer's ``cache_ttl_s`` reports them as
``prompt_tokens_details.cached_tokens`` (``providers/sim_cache.py``). Time: ``ttft_ms + stall_ms`` before the
first byte, then ``ms_per_token`` per token, all times ``latency_scale``. Faults, in order:
401 on a wrong key, ``rate_limit_rpm`` (429 + Retry-After), ``error_rate`` (``error_status``);
``reset_after_chunks`` aborts a stream's TCP connection after that many SSE events.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
import uuid
from collections.abc import Callable, Sequence

import orjson
from aiohttp import web

from suanli.config import Offer, Region, Voucher
from suanli.providers.sim_balance import add_balance_routes
from suanli.providers.sim_batches import add_batch_routes
from suanli.providers.sim_finetune import add_finetune_routes
from suanli.providers.sim_state import FaultUpdateError, SimState
from suanli.providers.sim_stream import ChunkPlan, stream_chunks
from suanli.providers.sim_text import default_length, embedding, generate_pieces, seed_of, vector_bytes
from suanli.providers.tokenizer import count_prompt_tokens

__all__ = ["SIM_STATE", "SimError", "chat_answer", "create_sim_app"]

SIM_STATE = web.AppKey("sim_state", SimState)
MAX_TOKENS_LIMIT = 65536
MAX_CHOICES = 16
DEFAULT_DIMENSIONS = 1024
MAX_DIMENSIONS = 8192
_MODEL_CREATED = 1735660800  # 2025-01-01: a fixed "created" for the model list

# HTTP status -> OpenAI error type
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    429: "requests",
}
# HTTP status -> OpenAI error code, for the simulated failures
_ERROR_CODES = {
    402: "insufficient_quota",
    404: "model_not_found",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


class SimError(Exception):
    """An error answer; the middleware renders it as OpenAI-shaped JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def _error_body(status: int, message: str, code: str | None, param: str | None) -> dict:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@web.middleware
async def _render_errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    try:
        response = await handler(request)
    except SimError as exc:
        state.count(f"status_{exc.status}")
        body = _error_body(exc.status, exc.message, exc.code, exc.param)
        key = state.region.api_key
        if state.behaviour.echo_key and key:  # a hostile platform (the echo_key knob)
            body["error"].update(message=f"{exc.message} (key {key})", code=key, param=key, type=key)
        return web.json_response(body, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:  # unknown route, wrong method
        state.count(f"status_{exc.status}")
        body = _error_body(exc.status, exc.reason, None, None)
        return web.json_response(body, status=exc.status)
    state.count(f"status_{response.status}")
    return response


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


_WALLET = web.AppKey("sim_wallet", object)  # () -> (behaviour, wallet): the balance endpoints' view


def _check_auth(state: SimState, request: web.Request) -> None:
    expected = state.region.api_key
    if expected and request.headers.get("Authorization", "") != f"Bearer {expected}":
        # Never echo what was sent: it may be somebody's real key.
        raise SimError(401, "Incorrect API key provided.", code="invalid_api_key")


async def _read_body(request: web.Request) -> tuple[SimState, dict]:
    state = request.app[SIM_STATE]
    state.count("requests")
    _check_auth(state, request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise SimError(400, "We could not parse the JSON body of your request.") from exc
    if not isinstance(body, dict):
        raise SimError(400, "The request body must be a JSON object.")
    return state, body


def _offer(state: SimState, body: dict) -> Offer:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "You must provide a model parameter.", param="model")
    offer = state.offers.get(model)
    if offer is None:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise SimError(404, message, code="model_not_found", param="model")
    return offer


def _admit(state: SimState, capability: str) -> None:
    """Capability, rate limit, then the simulated error rate."""
    if capability not in state.region.capabilities:
        raise SimError(404, f"This platform does not offer {capability}.", code="unsupported_endpoint")
    retry_after = state.retry_after_s()
    if retry_after is not None:
        message = f"Rate limit reached: {state.behaviour.rate_limit_rpm} requests per minute."
        raise SimError(429, message, code="rate_limit_exceeded", headers={"Retry-After": str(retry_after)})
    if state.fails():
        status = state.behaviour.error_status
        headers = {"Retry-After": "1"} if status == 429 else None
        raise SimError(
            status, f"Simulated failure ({status}).", code=_ERROR_CODES.get(status), headers=headers
        )


def _positive_int(body: dict, name: str, limit: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise SimError(400, f"{name} must be an integer between 1 and {limit}.", param=name)
    return value


def _model_tokens(offer: Offer, reference_tokens: int) -> int:
    # Rounded before the ceiling so that 1000 x 1.3 is 1300 (DESIGN.md, payment semantics).
    return math.ceil(round(reference_tokens * offer.token_ratio, 6))


def _answers(
    state: SimState, offer: Offer, prompts: list[object], body: dict, limit: int | None
) -> list[list[str]]:
    n = _positive_int(body, "n", MAX_CHOICES) or 1
    answers = []
    for prompt in prompts:
        for index in range(n):
            seed = seed_of(state.region.id, offer.upstream_name, prompt, index)
            answers.append(generate_pieces(seed, limit or default_length(seed)))
    return answers


def _usage(prompt_tokens: int, answers: list[list[str]], cached_tokens: int | None = None) -> dict:
    completion = sum(len(pieces) for pieces in answers)
    usage: dict = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    if cached_tokens is not None:  # chat answers say what of the prompt was a cache hit
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return usage


def _headers(state: SimState, request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "x-sim-region": state.region.id}


async def _respond(request: web.Request, state: SimState, plan: ChunkPlan, whole: dict) -> web.StreamResponse:
    headers = _headers(state, plan.base["id"])
    usage = whole["usage"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    state.charge(whole["model"], usage["prompt_tokens"], usage["completion_tokens"], cached_tokens=cached)
    if plan.stream:
        return await stream_chunks(request, state, plan, headers)
    await _sleep(state.first_byte_s() + plan.tokens * state.per_token_s())
    return web.Response(body=orjson.dumps(whole), content_type="application/json", headers=headers)


def _base(state: SimState, prefix: str, obj: str, offer: Offer) -> dict:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": offer.upstream_name,
        "system_fingerprint": f"fp_sim_{state.region.id}",
    }


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return stream, include_usage


def chat_answer(state: SimState, body: dict, *, admit: bool = True) -> tuple[ChunkPlan, dict]:
    """One chat body's answer: its chunk plan and its whole JSON; SimError for a bad body.

    ``admit=False`` (a platform batch's line) skips the rate limit and the error rate.
    """
    offer = _offer(state, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "messages must be a non-empty array.", param="messages")
    limit = _positive_int(body, "max_completion_tokens", MAX_TOKENS_LIMIT)
    limit = limit or _positive_int(body, "max_tokens", MAX_TOKENS_LIMIT)
    if admit:
        _admit(state, "chat")
    answers = _answers(state, offer, [orjson.dumps(messages).decode()], body, limit)
    prompt_tokens = _model_tokens(offer, count_prompt_tokens("chat/completions", body))
    cached = 0
    if admit:  # a platform batch's lines share no prompt cache
        cached = state.cache.model_tokens(offer, state.cache.lookup(offer, messages), prompt_tokens)
    usage = _usage(prompt_tokens, answers, cached)
    finish = "length" if limit else "stop"
    stream, include_usage = _stream_flags(body) if admit else (False, False)
    base = _base(state, "chatcmpl", "chat.completion.chunk" if stream else "chat.completion", offer)
    plan = ChunkPlan("chat", base, answers, finish, usage, stream=stream, include_usage=include_usage)
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
            "logprobs": None,
            "finish_reason": finish,
        }
        for index, pieces in enumerate(answers)
    ]
    return plan, {**base, "choices": choices, "usage": usage}


def _batch_line(state: SimState, body: dict) -> tuple[int, dict]:
    """A platform batch's line: (200, the answer) or (status, the OpenAI error body)."""
    try:
        return 200, chat_answer(state, body, admit=False)[1]
    except SimError as exc:
        return exc.status, _error_body(exc.status, exc.message, exc.code, exc.param)


async def _chat(request: web.Request) -> web.StreamResponse:
    state, body = await _read_body(request)
    plan, whole = chat_answer(state, body)
    return await _respond(request, state, plan, whole)


def _prompts(body: dict) -> list[object]:
    """The prompts of a completions body, one choice each."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt) or all(_is_token_list(p) for p in prompt):
            return list(prompt)
    raise SimError(400, "prompt must be a string, an array of strings, or token arrays.", param="prompt")


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


async def _completions(request: web.Request) -> web.StreamResponse:
    state, body = await _read_body(request)
    offer = _offer(state, body)
    prompts = _prompts(body)
    limit = _positive_int(body, "max_tokens", MAX_TOKENS_LIMIT)
    _admit(state, "completions")
    answers = _answers(state, offer, prompts, body, limit)
    usage = _usage(_model_tokens(offer, count_prompt_tokens("completions", body)), answers)
    finish = "length" if limit else "stop"
    stream, include_usage = _stream_flags(body)
    base = _base(state, "cmpl", "text_completion", offer)
    plan = ChunkPlan("text", base, answers, finish, usage, stream=stream, include_usage=include_usage)
    choices = [
        {"text": "".join(pieces), "index": index, "logprobs": None, "finish_reason": finish}
        for index, pieces in enumerate(answers)
    ]
    return await _respond(request, state, plan, {**base, "choices": choices, "usage": usage})


def _embedding_inputs(body: dict) -> list[object]:
    value = body.get("input")
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            return [value]
        if all((isinstance(v, str) and v) or _is_token_list(v) for v in value):
            return list(value)
    raise SimError(400, "input must be a non-empty string, array of strings, or token arrays.", param="input")


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state, body = await _read_body(request)
    offer = _offer(state, body)
    inputs = _embedding_inputs(body)
    dimensions = _positive_int(body, "dimensions", MAX_DIMENSIONS) or DEFAULT_DIMENSIONS
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise SimError(400, "encoding_format must be float or base64.", param="encoding_format")
    _admit(state, "embeddings")
    data = []
    for index, item in enumerate(inputs):
        # Keyed by the public model name: every region serving a model gives the same vector.
        vector = embedding(f"{offer.name}\x1f{item}", dimensions)
        value: object = _b64(vector_bytes(vector)) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    prompt_tokens = _model_tokens(offer, count_prompt_tokens("embeddings", body))
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    state.charge(offer.upstream_name, prompt_tokens, 0)
    await _sleep(state.first_byte_s())
    answer = {"object": "list", "data": data, "model": offer.upstream_name, "usage": usage}
    headers = _headers(state, f"emb-{uuid.uuid4().hex}")
    return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=headers)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _model_entry(state: SimState, name: str) -> dict:
    return {"id": name, "object": "model", "created": _MODEL_CREATED, "owned_by": state.region.id}


async def _models(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    state.count("requests")
    _check_auth(state, request)
    data = [_model_entry(state, name) for name in state.offers]
    return web.json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    state.count("requests")
    _check_auth(state, request)
    name = request.match_info["model"]
    if name not in state.offers:
        _offer(state, {"model": name})
    return web.json_response(_model_entry(state, name))


async def _get_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[SIM_STATE].snapshot())


async def _post_faults(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise SimError(400, "fault update must be a JSON object") from exc
    if not isinstance(changes, dict):
        raise SimError(400, "fault update must be a JSON object")
    try:
        state.update(changes)
    except FaultUpdateError as exc:
        raise SimError(400, str(exc)) from exc
    return web.json_response(state.snapshot())


async def _delete_faults(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    state.reset()
    return web.json_response(state.snapshot())


async def _stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(dict(sorted(request.app[SIM_STATE].stats.items())))


def create_sim_app(
    region: Region,
    *,
    latency_scale: float = 1.0,
    timezone: str = "Asia/Shanghai",
    vouchers: Sequence[Voucher] = (),
    now_s: Callable[[], float] = time.time,
) -> web.Application:
    """The aiohttp app simulating ``region``; ``latency_scale=0`` makes every wait instant.

    ``vouchers`` (the region's) are its own packages, drawn by its balance endpoints.
    ``now_s`` is the platform's clock (epoch seconds): its prompt cache's TTL and its batches' windows.
    """
    app = web.Application(middlewares=[_render_errors], client_max_size=64 * 1024 * 1024)
    state = app[SIM_STATE] = SimState(
        region, latency_scale, timezone=timezone, vouchers=tuple(vouchers), now_s=now_s
    )
    app[_WALLET] = lambda: (state.behaviour, state.wallet)
    add_balance_routes(app, _WALLET, lambda request: _check_auth(state, request))
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model)
    app.router.add_get("/sim/faults", _get_faults)
    app.router.add_post("/sim/faults", _post_faults)
    app.router.add_delete("/sim/faults", _delete_faults)
    app.router.add_get("/sim/stats", _stats)
    add_finetune_routes(app, SIM_STATE)  # /v1/files and /v1/fine_tuning/jobs
    add_batch_routes(app, SIM_STATE, _batch_line)  # /v1/batches, /v1/files/{id}/content
    return app
