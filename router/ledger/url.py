"""Which driver a ledger URL names: here, so neither driver imports the other to tell."""

from __future__ import annotations

import re

__all__ = ["PG_SCHEMES", "is_pg_url", "shown_url"]

PG_SCHEMES = ("postgresql", "postgres")


def is_pg_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL ledger (so SQLite users never import asyncpg)."""
    return url.partition("://")[0] in PG_SCHEMES


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def shown_url(url: str) -> str:
    """``url`` with any password masked, fit for a terminal or a log."""
    return _PASSWORD.sub(r"\1***@", url)
