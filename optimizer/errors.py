"""Errors the optimizer raises: one base class, one subclass per failure the caller can act on."""

from __future__ import annotations

__all__ = ["InfeasibleError", "OptimizerError"]


class OptimizerError(Exception):
    """Base of every error raised by ``optimizer``."""


class InfeasibleError(OptimizerError):
    """The planner's solver ended without an optimal solution.

    ``status`` is the solver's own status name (``INFEASIBLE``, ``ABNORMAL``, ...); the
    caller keeps its previous plan and tries again later.
    """

    def __init__(self, status: str, message: str | None = None) -> None:
        self.status = status
        super().__init__(message or f"the planner's LP ended with status {status}")
