"""Virtual keys on the ledger, the rules both drivers share: key rows, and key budgets held like balances.

A key's budget is a yuan amount per local day and per local month. Each request of a key
with a budget holds the upper bound of its cost (input estimate plus ``max_tokens``) on the
key's day and month rows, in the same transaction as its voucher hold and under the same
hold id: ``settle`` posts the real cost and releases the rest, ``void`` (and a restart's
recovery) releases it all. So no interleaving of requests can spend more than a budget.

Storage (``tables.key_tables``): ``keys`` (one row per key, the secret only as its SHA-256),
``key_spend`` and ``key_holds``. Each driver's SQL: ``sqlite/keys.py``, ``postgres/keys.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from suanli.router.errors import BudgetExceededError
from suanli.router.ledger.rules import YUAN_SCALE
from suanli.router.ledger.tables import listed, unlisted
from suanli.router.ledger.types import KeyBudgetHold

__all__ = [
    "KEY_COLUMNS",
    "PRIORITIES",
    "YUAN_Q",
    "KeyBudgetHold",
    "KeyRow",
    "key_row",
    "key_values",
    "over_budget",
    "spend_of",
    "yuan_q",
]

YUAN_Q = YUAN_SCALE  # nano-yuan per yuan, as the ledger's yuan vouchers

# A key row's columns as read (never the secret), in ``key_row``'s order; ``key_values`` adds the secret.
KEY_COLUMNS = (
    "id, name, created, revoked, expires, budget_day_q, budget_month_q, allowed_regions, allowed_zones,"
    " default_class, origin, rpm, priority"
)

PRIORITIES = ("critical", "normal", "sheddable")  # who is cut last .. first when supply shrinks


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A virtual key as stored (never its secret). Times are epoch seconds; budgets in yuan."""

    id: str
    name: str
    created: float
    revoked: float | None
    expires: float | None
    budget_yuan_per_day: float | None
    budget_yuan_per_month: float | None
    allowed_regions: tuple[str, ...] | None
    allowed_zones: tuple[str, ...] | None
    default_class: str | None
    origin: str | None
    rpm: int | None
    priority: str = "normal"  # one of PRIORITIES: sheddable work is refused first when supply shrinks


def yuan_q(yuan: float | None) -> int | None:
    """Yuan in nano-yuan, as a budget is stored; None stays None."""
    return None if yuan is None else round(yuan * YUAN_Q)


def key_values(row: KeyRow, secret_sha256: str) -> tuple[Any, ...]:
    """A new key as stored: ``KEY_COLUMNS`` then ``secret_sha256``."""
    return (
        row.id,
        row.name,
        row.created,
        row.revoked,
        row.expires,
        yuan_q(row.budget_yuan_per_day),
        yuan_q(row.budget_yuan_per_month),
        listed(row.allowed_regions),
        listed(row.allowed_zones),
        row.default_class,
        row.origin,
        row.rpm,
        row.priority,
        secret_sha256,
    )


def key_row(r: Sequence[Any]) -> KeyRow:
    """A key read in ``KEY_COLUMNS`` order."""
    return KeyRow(
        id=r[0],
        name=r[1],
        created=r[2],
        revoked=r[3],
        expires=r[4],
        budget_yuan_per_day=None if r[5] is None else r[5] / YUAN_Q,
        budget_yuan_per_month=None if r[6] is None else r[6] / YUAN_Q,
        allowed_regions=unlisted(r[7]),
        allowed_zones=unlisted(r[8]),
        default_class=r[9],
        origin=r[10],
        rpm=r[11],
        priority=r[12] or "normal",
    )


def over_budget(
    hold: KeyBudgetHold, limit_yuan: float | None, label: str, used_q: int
) -> BudgetExceededError:
    """The refusal of a hold that would take a period past its limit (``used_q`` spent or held)."""
    return BudgetExceededError(
        f"this key's budget of {limit_yuan:g} yuan {label} is spent: {used_q / YUAN_Q:.6f} yuan used or"
        f" held, and this request may cost up to {hold.amount_yuan:.6f} yuan"
        " (lower max_tokens to ask for less)"
    )


def spend_of(rows: Iterable[Sequence[Any]]) -> dict[str, tuple[float, float]]:
    """Period -> (spent yuan, held yuan), from ``(period, spent_q, held_q)`` rows."""
    return {r[0]: (r[1] / YUAN_Q, r[2] / YUAN_Q) for r in rows}
