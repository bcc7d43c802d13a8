"""The usage rows of a shared PostgreSQL ledger as several hash chains, one per writer.

Rows carry their chain's id (``usage.chain``: '' for the per-hold path's chain, ``r-OWNER``
for a replica's escrow chain, ``postgres/escrow.py``); each chain links from GENESIS on its
own, so replicas never wait on one another's tail. Its writer records its head as it
commits (``chain_head`` for '', ``chains`` for the others): the audit checks each chain ends
there and seals the heads into one root (``ledger/audit.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

from suanli.router.ledger import usage

__all__ = ["CHAIN_HEADS", "chain_parts", "first_broken_of_chains", "split_chains"]

# Every chain's recorded (id, last row id, last hash): the escrow chains and the main one.
CHAIN_HEADS = (
    "SELECT id, last_id, last_hash FROM chains UNION ALL SELECT '', last_id, last_hash FROM chain_head"
)


def split_chains(rows: Sequence[Sequence[Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows read as ``..., chain`` (USAGE_COLUMNS first) -> chain id -> its rows without the chain, by id."""
    chains: dict[str, list[tuple[Any, ...]]] = {}
    for r in sorted(rows, key=lambda r: (r[-1], r[0])):
        chains.setdefault(r[-1], []).append(tuple(r[:-1]))
    return chains


def first_broken_of_chains(rows: Sequence[Sequence[Any]]) -> int | None:
    """The first row, over every chain, whose link or hash does not verify; None if all do."""
    broken = [b for chain in split_chains(rows).values() if (b := usage.first_broken_row(chain)) is not None]
    return min(broken) if broken else None


def chain_parts(chains: dict[str, list[tuple[Any, ...]]], heads: Sequence[asyncpg.Record | Sequence[Any]]
                ) -> list[tuple[str, Iterator[tuple[int, Any, str, str]], tuple[int, str] | None]]:
    """What ``audit.verify`` walks: (chain id, its entries, its recorded head) for every chain."""
    recorded = {h[0]: (int(h[1]), h[2]) for h in heads}
    names = sorted(set(chains) | set(recorded))
    return [(name, (usage.chain_entry(r) for r in chains.get(name, [])), recorded.get(name))
            for name in names]
