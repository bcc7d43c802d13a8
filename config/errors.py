"""Errors raised while reading and checking a suanli config."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """One or more problems in a config, each tied to the path that holds it.

    ``problems`` is a list of ``(path, message)``; a path reads like
    ``regions[2].models[0].price.input`` so a user can find the line.
    """

    def __init__(self, problems: list[tuple[str, str]], *, source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{path or '<root>'}: {message}" for path, message in problems]
        super().__init__(f"{source}: " + "; ".join(lines))
