"""Check a client's request body before anything is routed or held.

Bad input becomes a BadRequestError naming the parameter, so it never reaches the
ledger or an upstream.
"""

from __future__ import annotations

from typing import Any

from suanli.router.errors import BadRequestError

__all__ = ["max_output_tokens", "validate_body"]

_ENDPOINT_FIELD = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs", "dimensions")
_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def validate_body(endpoint: str, body: Any) -> dict:
    """The body as a dict, or BadRequestError with the offending ``param``."""
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", param=None)
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
    """The most output tokens the request may produce: the hold's upper bound."""
    if endpoint == "embeddings":
        return 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default
