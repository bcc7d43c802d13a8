"""suanli (算力): a multi-region compute arbitrage router; this package is the SDK's face.

``from suanli import Router`` embeds the same request path the HTTP proxy serves::

    async with Router.from_config("suanli.yaml") as router:
        answer = await router.chat_completions(model="deepseek-flash", messages=[...])

The parts live under one import root: ``suanli.config`` (schema and loader),
``suanli.optimizer`` (pure decision code), ``suanli.providers`` (upstream adapters and the
simulated platforms) and ``suanli.router`` (the Router, ledger, HTTP app, CLI). In the
repository they are the top-level folders ``config/``, ``optimizer/``, ``providers/`` and
``router/`` (pyproject.toml maps them), so nothing is installed under a generic name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. Loaded on first use, so ``import suanli.optimizer`` (a replay,
# a benchmark) does not pay for the HTTP stack, and ``import suanli.config`` stays a leaf.
_ERRORS = "suanli.router.errors"
_HOMES = {
    "Router": "suanli.router.core.router",
    "RequestContext": "suanli.router.core.router",
    "Completion": "suanli.router.core.results",
    "CompletionStream": "suanli.router.core.results",
    "Routing": "suanli.router.core.results",
    "StatusBoard": "suanli.router.status.board",
    "create_app": "suanli.router.http.app",
    **{
        name: _ERRORS
        for name in (
            "ApiError", "AuthenticationError", "BadRequestError", "BudgetExceededError",
            "InsufficientBalanceError", "KeyRateLimitError", "LedgerError", "ModelNotFoundError",
            "NoRouteError", "NotFoundError", "PermissionDeniedError", "RateLimitedError",
            "RouterError", "UpstreamFailedError",
        )
    },
}

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Completion",
    "CompletionStream",
    "InsufficientBalanceError",
    "KeyRateLimitError",
    "LedgerError",
    "ModelNotFoundError",
    "NoRouteError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RequestContext",
    "Router",
    "RouterError",
    "Routing",
    "StatusBoard",
    "UpstreamFailedError",
    "create_app",
]

if TYPE_CHECKING:
    from suanli.router.core.results import Completion, CompletionStream, Routing
    from suanli.router.core.router import RequestContext, Router
    from suanli.router.errors import (
        ApiError,
        AuthenticationError,
        BadRequestError,
        BudgetExceededError,
        InsufficientBalanceError,
        KeyRateLimitError,
        LedgerError,
        ModelNotFoundError,
        NoRouteError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitedError,
        RouterError,
        UpstreamFailedError,
    )
    from suanli.router.http.app import create_app
    from suanli.router.status.board import StatusBoard


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'suanli' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
