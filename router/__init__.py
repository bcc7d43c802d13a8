"""suanli's composition root: the Router SDK, ledger, HTTP app and CLI.

The SDK's face is the ``suanli`` package: ``from suanli import Router``.
"""

from __future__ import annotations

from suanli.router.core.results import Completion, CompletionStream, Routing
from suanli.router.core.router import RequestContext, Router
from suanli.router.status.board import StatusBoard

__all__ = ["Completion", "CompletionStream", "RequestContext", "Router", "Routing", "StatusBoard"]
