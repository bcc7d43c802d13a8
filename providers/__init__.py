"""Upstream adapters: OpenAI-compatible pass-through, litellm, simulated city platforms."""

from __future__ import annotations

from providers.base import Endpoint, Reply, StreamReply, Upstream, UpstreamCall, Usage
from providers.errors import ProviderError, UpstreamBroken, UpstreamError, UpstreamTimeout

__all__ = [
    "Endpoint",
    "ProviderError",
    "Reply",
    "StreamReply",
    "Upstream",
    "UpstreamBroken",
    "UpstreamCall",
    "UpstreamError",
    "UpstreamTimeout",
    "Usage",
]
