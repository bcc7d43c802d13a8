"""Check a client's request body before anything is routed or held.

Bad input becomes a BadRequestError naming the parameter, so it never reaches the
ledger or an upstream.
"""

from __future__ import annotations

from typing import Any

from suanli.router.errors import BadRequestError

__all__ = [
    "BOUNDS", "MAX_CHOICES", "MAX_DEPTH", "check_depth", "longest_choice_tokens", "max_output_tokens",
    "validate_body",
]

_ENDPOINT_FIELD = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "best_of", "seed", "top_logprobs", "dimensions")
# Upper bounds the proxy enforces before anything is held or sent (README, "Request bounds"): each
# unbounded ask would cost an upstream call only to be refused there, and ``n`` x ``max_tokens``
# sizes the hold. OpenAI's own limits where it has them (n 128, best_of 20, top_logprobs 20);
# 131072 output tokens is above any offered model's output window; 8192 dimensions above any
# embedding model's.
MAX_CHOICES = 128
MAX_DEPTH = 64  # levels of nested objects and arrays in a body
BOUNDS = {
    "max_tokens": 131_072,
    "max_completion_tokens": 131_072,
    "n": MAX_CHOICES,
    "best_of": 20,
    "top_logprobs": 20,
    "dimensions": 8192,
}
_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def validate_body(endpoint: str, body: Any) -> dict:
    """The body as a dict, or BadRequestError with the offending ``param``."""
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", param=None)
    check_depth(body)
    model = body.get("model")
    if model is None:
        raise BadRequestError("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequestError("model must be a non-empty string", param="model")
    field = _ENDPOINT_FIELD[endpoint]
    if field not in body:
        raise BadRequestError(f"missing required parameter: '{field}'", param=field)
    _check_payload(endpoint, field, body[field])
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequestError(f"{name} must be an integer", param=name)
        if value < (0 if name == "seed" else 1):
            raise BadRequestError(f"{name} must be at least 1, got {value}", param=name)
        bound = BOUNDS.get(name)
        if bound is not None and value > bound:
            raise BadRequestError(f"{name} must be at most {bound}, got {value}", param=name)
    for name in _NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequestError(f"{name} must be a number", param=name)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequestError("stream must be a boolean", param="stream")
    if stream and endpoint == "embeddings":
        raise BadRequestError("embeddings cannot be streamed", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequestError("stream_options must be an object", param="stream_options")
    return body


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """BadRequestError when ``value`` nests lists and objects deeper than ``limit`` levels.

    orjson reads up to 1024 levels but writes at most 254, so a deeper body would fail only when
    forwarded, after its hold (a 500); no real request comes near ``MAX_DEPTH``.
    """
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise BadRequestError(
                f"the body nests deeper than {limit} levels", param=None, code="invalid_json"
            )
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _check_payload(endpoint: str, field: str, value: Any) -> None:
    if endpoint == "chat/completions":
        if not isinstance(value, list) or not value:
            raise BadRequestError("messages must be a non-empty array", param="messages")
        for i, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequestError(f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise BadRequestError(
                    f"messages[{i}].content must be a string or an array", param=f"messages[{i}].content"
                )
        return
    ok = isinstance(value, str) or (
        isinstance(value, list)
        and value
        and all(isinstance(v, str | int) or isinstance(v, list) for v in value)
    )
    if not ok:
        raise BadRequestError(f"{field} must be a string or a non-empty array", param=field)


def max_output_tokens(endpoint: str, body: dict, default: int) -> int:
    """The most output tokens the request may produce, over every choice: the hold's upper bound.

    The upstream bills each generated choice: ``n`` of them (``best_of`` for completions, which
    generates that many and returns ``n``) for each prompt of a completions batch, each up to
    ``max_tokens`` (or ``default`` when absent).
    """
    if endpoint == "embeddings":
        return 0
    cap = default
    for name in ("max_completion_tokens", "max_tokens"):
        value = _int(body.get(name))
        if value is not None:
            cap = value
            break
    choices = _int(body.get("n")) or 1
    if endpoint == "completions":
        choices = max(choices, _int(body.get("best_of")) or 1) * _prompt_count(body.get("prompt"))
    return cap * choices


def longest_choice_tokens(endpoint: str, body: dict, default: int) -> int:
    """The most output tokens one choice may produce (choices are generated side by side):
    what a whole answer may take the time of."""
    if endpoint == "embeddings":
        return 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = _int(body.get(name))
        if value is not None:
            return value
    return default


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _prompt_count(prompt: Any) -> int:
    """A completions ``prompt``: a string or one token list is one prompt; a list of them is several."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1
