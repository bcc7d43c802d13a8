"""suanli's composition root: the Router SDK, ledger, HTTP app and CLI.

``from router import Router`` is the SDK.
"""

from __future__ import annotations

from router.core import RequestContext, Router
from router.results import Completion, CompletionStream, Routing
from router.status import StatusBoard

__all__ = ["Completion", "CompletionStream", "RequestContext", "Router", "Routing", "StatusBoard"]
