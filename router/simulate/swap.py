"""Giving a booked training job's voucher to a later one that saves more with it.

A training job is booked when it arrives and may start hours later; the voucher it means
to use is spoken for from then on. A later job that would save more with that voucher
(a larger job, a dearer region without it) used to pay cash. When a training job is
placed, ``better_swap`` also places it as if the vouchers of training jobs booked but not
yet started were free; if that placement takes a voucher one of them holds, and the new
job saves more with it than the booked one does, the booked job gives it up and is placed
again (its start window allowing). Savings are the cash of each job with and without the
voucher at the same region, start and balance.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from suanli.config import Config, Offer, Voucher
from suanli.optimizer import CapacityBook, Deferrer, Job, Placement, charge, price_factor

__all__ = ["Holder", "better_swap"]


class Holder(Protocol):
    """A booked job as the engine keeps it (``engine._Booked``)."""

    job: Job
    region: str
    offer: Offer
    voucher: str | None
    rel_start: float


def _cash(job: Job, offer: Offer, start_s: float, tz, voucher: Voucher | None, balance: float) -> float:  # noqa: ANN001
    factor = price_factor(offer, datetime.fromtimestamp(start_s, UTC), tz)
    paid = charge(
        offer,
        input_tokens=job.input_tokens,
        output_tokens=job.output_tokens,
        work_class=job.work_class,
        factor=factor,
        voucher=voucher,
        balance=balance,
    )
    return paid.cash_yuan


def better_swap(
    config: Config,
    deferrer: Deferrer,
    job: Job,
    now_s: float,
    book: CapacityBook,
    available: dict[str, float],
    placed: Placement | None,
    holders: list[Holder],
    start_of: Callable[[Holder], float],
    need_of: Callable[[Holder], float],
    tz,  # noqa: ANN001 - tzinfo
) -> tuple[Placement, Holder] | None:
    """A placement of training ``job`` using a booked training job's voucher, and that job; or None."""
    held = [h for h in holders if h.voucher is not None and h.job.work_class == "training"]
    if not held:
        return None
    freed = dict(available)
    for h in held:
        freed[h.voucher] += need_of(h)  # type: ignore[index]
    other = deferrer.place(job, now_s, book, freed)
    if other is None or other.voucher is None:
        return None
    holder = next((h for h in held if h.voucher == other.voucher), None)
    if holder is None or (placed is not None and placed.voucher == other.voucher):
        return None
    vouchers = {v.id: v for v in config.vouchers}
    voucher = vouchers[other.voucher]
    balance = freed[other.voucher]
    start = max(other.start_s, now_s)
    if placed is None:
        before = float("inf")  # no placement without it: any saving is worth it
    else:
        own = vouchers.get(placed.voucher) if placed.voucher else None
        left = available.get(placed.voucher, 0.0) if placed.voucher else 0.0
        before = _cash(job, placed.offer, max(placed.start_s, now_s), tz, own, left)
    gain = before - _cash(job, other.offer, start, tz, voucher, balance)
    h_start = start_of(holder)
    loss = _cash(holder.job, holder.offer, h_start, tz, None, 0.0) - _cash(
        holder.job, holder.offer, h_start, tz, voucher, balance
    )
    return (other, holder) if gain > loss + 1e-9 else None
