"""Classify a validated request: its class, origin, model or pinned region, and token estimates.

The "classify -> estimate tokens" steps of the request flow (DESIGN.md): the class comes from
``X-Suanli-Class``, else ``service_tier: "flex"`` (batch), else the key's default, else
interactive; the origin from ``X-Suanli-Origin``, else the key's, else the config's; ``model``
is a public name or ``REGION/MODEL``. What is wrong is a 400 (or 403, 404) before anything is
held.
"""

from __future__ import annotations

from suanli.config import Config
from suanli.optimizer import Ask
from suanli.providers.tokenizer import count_prompt_tokens
from suanli.router.core.context import RequestContext
from suanli.router.core.validate import max_output_tokens
from suanli.router.errors import BadRequestError, ModelNotFoundError, PermissionDeniedError

__all__ = ["classify", "resolve_model"]

_CAPABILITY = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}
_CLASSES = ("interactive", "batch", "training")


def classify(
    config: Config, endpoint: str, body: dict, ctx: RequestContext, *, model_names: frozenset[str]
) -> Ask:
    """The Ask the chooser ranks for ``body`` (validated) sent to ``endpoint`` by ``ctx``."""
    pinned, model = resolve_model(config, body["model"], model_names)
    if pinned is not None and ctx.allowed_regions is not None and pinned not in ctx.allowed_regions:
        raise PermissionDeniedError(f"this key may not use region {pinned!r}", param="model")
    flex = body.get("service_tier") == "flex"
    work_class = ctx.work_class or ("batch" if flex else ctx.default_class or "interactive")
    if work_class not in _CLASSES:
        raise BadRequestError(
            f"unknown class {work_class!r}: use one of {', '.join(_CLASSES)}", param="X-Suanli-Class"
        )
    origin = ctx.origin or config.origin
    if origin not in ("east", "west"):
        raise BadRequestError(f"unknown origin {origin!r}: use east or west", param="X-Suanli-Origin")
    return Ask(
        model=model,
        work_class=work_class,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        input_tokens=count_prompt_tokens(endpoint, body) if ctx.input_tokens is None else ctx.input_tokens,
        output_tokens=max_output_tokens(endpoint, body, config.default_max_tokens),
        capability=_CAPABILITY[endpoint],  # type: ignore[arg-type]
        pinned_region=pinned,
        allowed_regions=ctx.allowed_regions,
    )


def resolve_model(config: Config, name: str, model_names: frozenset[str]) -> tuple[str | None, str]:
    """(pinned region or None, public model name) for ``MODEL`` or ``REGION/MODEL``."""
    if "/" in name:
        region_id, _, model = name.partition("/")
        region = config.region(region_id)
        if region is not None:
            if region.offer(model) is None:
                raise ModelNotFoundError(f"region {region_id!r} does not offer model {model!r}")
            return region_id, model
    if name not in model_names:
        raise ModelNotFoundError(f"the model {name!r} does not exist or no region offers it")
    return None, name
