"""suanli's composition root: the Router SDK, ledger, HTTP app and CLI."""

from __future__ import annotations

__all__: list[str] = []
