"""Voucher rows, the rules both drivers share: what the config may change, and how a status reads.

A voucher new to the ledger starts at its full amount; a known one keeps its money state
(kind, amount, balance), since the ledger is the truth: a config that disagrees is logged,
not applied, so editing the YAML can neither refill nor drain it. Only the metadata (region,
rate, restrictions, validity) follows the config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from suanli.config import Voucher
from suanli.router.ledger.tables import iso, listed
from suanli.router.ledger.types import VoucherStatus

__all__ = ["STATUS_COLUMNS", "burn_window", "voucher_meta", "voucher_status", "warn_if_config_differs"]

log = logging.getLogger("router.ledger")

# What a status is read from, in this order (``voucher_status``).
STATUS_COLUMNS = "id, region, kind, scale, amount_q, balance_q, held_q, valid_from, expires"


def voucher_meta(v: Voucher) -> tuple[Any, ...]:
    """The metadata the config owns, as stored: region, rate, models, classes, valid_from, expires."""
    return v.region, v.rate, listed(v.models), listed(v.classes), iso(v.valid_from), iso(v.expires)


def warn_if_config_differs(v: Voucher, kind: str, scale: int, amount_q: int) -> None:
    """Log a config whose kind or amount disagrees with the ledger's (which wins)."""
    if kind != v.kind or round(v.amount * scale) != amount_q:
        log.warning(
            "ledger: voucher %s is %s %g in the ledger but %s %g in the config; the ledger wins",
            v.id,
            kind,
            amount_q / scale,
            v.kind,
            v.amount,
        )


def burn_window(now: datetime) -> tuple[float, float]:
    """The hour a burn rate counts: ``(now - 1 h, now]`` as epoch seconds."""
    return (now - timedelta(hours=1)).timestamp(), now.timestamp()


def voucher_status(row: Sequence[Any], burn_q: Mapping[str, int]) -> VoucherStatus:
    """A voucher row read in ``STATUS_COLUMNS`` order; ``burn_q``: voucher id -> steps settled in the hour."""
    vid, region, kind, scale, amount_q, balance_q, held_q, valid_from, expires = row
    return VoucherStatus(
        id=vid,
        region=region,
        kind=kind,
        amount=amount_q / scale,
        balance=balance_q / scale,
        held=held_q / scale,
        available=(balance_q - held_q) / scale,
        spent=(amount_q - balance_q) / scale,
        valid_from=None if valid_from is None else datetime.fromisoformat(valid_from),
        expires=None if expires is None else datetime.fromisoformat(expires),
        burn_per_hour=burn_q.get(vid, 0) / scale,
    )
