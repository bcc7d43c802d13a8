"""Upstream adapters: OpenAI-compatible pass-through, litellm, simulated city platforms.

The adapters and the sim fleet load on first access (``providers.SimFleet``), so importing
the package stays cheap and never imports litellm or aiohttp.web.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from suanli.providers.base import Endpoint, Reply, StreamReply, Upstream, UpstreamCall, Usage
from suanli.providers.errors import ProviderError, UpstreamBroken, UpstreamError, UpstreamTimeout
from suanli.providers.tokenizer import (
    count_message_tokens,
    count_prompt_tokens,
    count_tokens,
    load_tokenizer,
    tokenizer_name,
)

if TYPE_CHECKING:
    from suanli.providers.litellm_adapter import LiteLLMUpstream
    from suanli.providers.openai_compat import OpenAICompatUpstream
    from suanli.providers.sim import SimFleet, create_sim_app, run_fleet_forever

__all__ = [
    "Endpoint",
    "LiteLLMUpstream",
    "OpenAICompatUpstream",
    "ProviderError",
    "Reply",
    "SimFleet",
    "StreamReply",
    "Upstream",
    "UpstreamBroken",
    "UpstreamCall",
    "UpstreamError",
    "UpstreamTimeout",
    "Usage",
    "count_message_tokens",
    "count_prompt_tokens",
    "count_tokens",
    "create_sim_app",
    "load_tokenizer",
    "run_fleet_forever",
    "tokenizer_name",
]

# public name -> module that defines it, imported on first access
_LAZY = {
    "LiteLLMUpstream": "suanli.providers.litellm_adapter",
    "OpenAICompatUpstream": "suanli.providers.openai_compat",
    "SimFleet": "suanli.providers.sim",
    "create_sim_app": "suanli.providers.sim",
    "run_fleet_forever": "suanli.providers.sim",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'providers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
