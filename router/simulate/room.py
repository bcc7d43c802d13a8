"""Room in a clock minute: batch work gives way to interactive requests; waiting for room.

The optimizer defers batch work to a (region, minute) the plan prices well, and the room
it takes there is gone for interactive requests that arrive later in that minute: where
the plan under-forecast the interactive traffic, an interactive request found every
eligible region full and was rejected while greedy, which starts batch work where it
stands, served it. An interactive request cannot wait; a batch job can. So the replay's
optimizer starts a deferred batch job at the *last* second of its minute (``late_start``,
when nothing that prices or pays it changes within the minute), and an interactive
request that finds no room takes the place of batch jobs booked in that minute at one of
its regions that have not started yet (``victims``); the engine places them again within
their deadlines, or leaves everything as it was when one cannot be.

``first_room`` is the wait of policies that never defer for price (greedy, round robin):
batch work with no room now starts in the first later minute where its cheapest option has
room. ``rotate`` is round robin's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from suanli.config import Config, Voucher
from suanli.optimizer import Ask, CapacityBook, ConfigIndex, Job, Option, Placement, State, minute_of, rank
from suanli.router.simulate.results import Booked
from suanli.router.simulate.trace import Event
from suanli.router.simulate.wallet import Wallet

__all__ = ["first_room", "late_start", "rotate", "victims"]

_DEADLINE_MARGIN_S = 1e-3


def late_start(
    placed: Placement,
    start_s: float,
    latest_s: float,
    events: Sequence[Event],
    index: ConfigIndex,
    wallet: Wallet,
    vouchers: Mapping[str, Voucher],
) -> float:
    """The last second of ``start_s``'s clock minute (within the deadline), when a start then is
    priced and paid exactly as one at ``start_s``; else ``start_s``.

    The same terms: no trace event in between, the same time-of-use factor, and the
    placement's voucher still valid and in the same period (package instance).
    """
    # A millisecond short of the deadline: an epoch time, back in trace seconds it can round past it.
    late = min(minute_of(start_s) * 60.0 + 59.0, latest_s - _DEADLINE_MARGIN_S)
    if late <= start_s or any(start_s < e.at_s <= late for e in events):
        return start_s
    if index.factor(placed.offer, start_s) != index.factor(placed.offer, late):
        return start_s
    voucher = vouchers.get(placed.voucher) if placed.voucher else None
    if voucher is not None and (
        wallet.period_key(voucher.id, start_s) != wallet.period_key(voucher.id, late)
        or (voucher.expires is not None and late >= voucher.expires.timestamp())
    ):
        return start_s
    return late


def victims(
    booked: Iterable[Booked],
    start_of: Callable[[Booked], float],
    book: CapacityBook,
    region: str,
    now_s: float,
    tokens: float,
) -> list[Booked] | None:
    """The fewest batch jobs booked at ``region`` later in ``now_s``'s minute whose room fits ``tokens``.

    The largest go first (fewest moved). None when even all of them free too little.
    """
    minute = minute_of(now_s)
    waiting = [
        b
        for b in booked
        if b.region == region
        and b.job.work_class == "batch"
        and start_of(b) > now_s
        and minute_of(start_of(b)) == minute
    ]
    tpm, rpm = book.limits(region)
    used_tokens, used_requests = book.used(region, minute)
    chosen: list[Booked] = []
    for b in sorted(waiting, key=lambda b: (-b.tokens, b.job.index)):
        chosen.append(b)
        used_tokens -= b.tokens
        used_requests -= 1
        if used_tokens + tokens <= tpm and used_requests + 1 <= rpm:
            return chosen
    return None


def first_room(
    config: Config,
    job: Job,
    now_s: float,
    book: CapacityBook,
    balances: Mapping[str, float],
    blocked: Callable[[float], frozenset[str]],
    ask_at: Callable[[Job, float], Ask],
) -> Placement | None:
    """The first option with room in a minute after ``now_s``'s, within the deadline, as a placement."""
    minute = minute_of(now_s) + 1
    while minute * 60.0 <= job.latest_s:
        at_s = minute * 60.0
        state = State(balances=balances, blocked=blocked(at_s))
        for option in rank(config, ask_at(job, at_s), state, datetime.fromtimestamp(at_s, UTC)):
            if job.work_class == "training" or book.fits(option.region.id, minute, option.charge.tokens):
                voucher = option.voucher.id if option.voucher else None
                return Placement(option.region.id, option.offer, at_s, voucher, option.charge.tokens)
        minute += 1
    return None


def rotate(options: list[Option], turn: int) -> list[Option]:
    """Round robin: the options in region order, starting at ``turn``."""
    order = sorted(options, key=lambda o: o.region.id)
    return order[turn:] + order[:turn]
