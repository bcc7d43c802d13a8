"""Prompt-cache hits and what they saved, per region, from the ledger (``suanli report``).

A settle records the upstream's ``usage.prompt_tokens_details.cached_tokens`` and what those
tokens saved against the offer's full input price, at the request's pricing factor (band or
off-peak), beside the usage row. The status document's ``cache`` shows the same figures since
the process started; these are the period's, from every replica's rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from rich.table import Table

from suanli.router.ledger.types import UsageRow

__all__ = ["cache_figures", "cache_table"]

_CHAT = ("interactive", "batch")  # the classes whose prompts a platform may cache


def cache_figures(rows: Iterable[UsageRow]) -> dict:
    """Per region and in all: requests, hits, hit rate, prompt and cached tokens, yuan saved."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for row in rows:
        if row.work_class not in _CHAT:
            continue
        for key in (row.region, ""):
            s = sums[key]
            s[0] += 1
            s[1] += 1 if row.cached_tokens > 0 else 0
            s[2] += row.prompt_tokens
            s[3] += row.cached_tokens
            s[4] += row.cache_saved_yuan
    total = sums.pop("", [0, 0, 0, 0, 0.0])
    return {
        "regions": [_entry(s, region=region) for region, s in sorted(sums.items())],
        "total": _entry(total),
    }


def _entry(s: list[float], **named: str) -> dict:
    requests, hits, prompt, cached, saved = s
    return {
        **named,
        "requests": int(requests),
        "hits": int(hits),
        "hit_rate": round(hits / requests, 4) if requests else 0.0,
        "prompt_tokens": int(prompt),
        "cached_tokens": int(cached),
        "cached_share": round(cached / prompt, 4) if prompt else 0.0,
        "saved_yuan": round(saved, 6),
    }


def cache_table(figures: dict) -> Table:
    """The figures as a rich table, one region a row and the total last."""
    table = Table(title="prompt cache: hits and what they saved", title_justify="left")
    for column in ("region", "requests", "hits", "hit rate", "cached tokens", "of prompt", "saved ¥"):
        table.add_column(column, justify="left" if column == "region" else "right")
    for entry in (*figures["regions"], {**figures["total"], "region": "[bold]total[/bold]"}):
        table.add_row(
            entry["region"], f"{entry['requests']:,}", f"{entry['hits']:,}", f"{entry['hit_rate']:.1%}",
            f"{entry['cached_tokens']:,}", f"{entry['cached_share']:.1%}", f"{entry['saved_yuan']:,.4f}",
        )
    return table
