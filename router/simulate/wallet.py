"""What a replay's payment rules remember between starts: voucher balances and prompt caches.

DESIGN.md's "Packages and caps": a voucher with ``period`` is one voucher per local period
(intersected with its validity), each holding ``amount``, what is left lost at the period's
end; one with ``daily_cap`` pays at most that many units per local day of the start. The
``Wallet`` keeps one balance per voucher instance and the units each voucher paid per day.

"Prompt cache": a session's request pays its ``cached`` input at ``price.cached_input`` when
the session's previous *served* request started at the same region and model within the
offer's ``cache_ttl_s``. ``Prompts`` keeps each session's last served start. Both are fed in
start order (ties: trace order), as the engine executes requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config, Offer, Voucher
from suanli.optimizer import Ask, Job, Option, Plan, cache_hit, capped_balance, local_day, package_window
from suanli.optimizer.affinity import FollowUps, scarce_regions, with_follow_ups
from suanli.optimizer.packages import renewals

__all__ = ["Prompts", "Reserved", "Wallet"]


class Wallet:
    """Voucher balances of one replay, per package period, with each voucher's units paid per day."""

    def __init__(self, config: Config) -> None:
        self.tz = ZoneInfo(config.timezone)
        self.vouchers = {v.id: v for v in config.vouchers}
        # (voucher id, instance start epoch s) -> units left; an instance not yet touched holds amount
        self._left: dict[tuple[str, float], float] = {}
        self._paid: dict[tuple[str, date], float] = {}  # (voucher id, local day) -> units paid that day

    def period_key(self, voucher_id: str, at_s: float) -> tuple[str, float]:
        """The instance of the voucher that pays at ``at_s``."""
        return self._key(self.vouchers[voucher_id], at_s)

    def _key(self, voucher: Voucher, at_s: float) -> tuple[str, float]:
        if voucher.period is None:
            return voucher.id, 0.0
        begin, _ = package_window(voucher, datetime.fromtimestamp(at_s, UTC), self.tz)
        return voucher.id, begin

    def balance(self, voucher_id: str, at_s: float) -> float:
        """Units left in the instance of the voucher that pays at ``at_s`` (caps aside)."""
        voucher = self.vouchers[voucher_id]
        return self._left.get(self._key(voucher, at_s), voucher.amount)

    def payable(self, voucher_id: str, at_s: float) -> float:
        """What the voucher may pay for a request starting at ``at_s``: its balance under its cap."""
        voucher = self.vouchers[voucher_id]
        left = self._left.get(self._key(voucher, at_s), voucher.amount)
        if voucher.daily_cap is None:
            return left
        day = local_day(datetime.fromtimestamp(at_s, UTC), self.tz)
        return capped_balance(voucher, left, self._paid.get((voucher_id, day), 0.0))

    def draw(self, voucher_id: str, at_s: float, units: float) -> None:
        """A request starting at ``at_s`` was paid ``units`` by the voucher."""
        voucher = self.vouchers[voucher_id]
        key = self._key(voucher, at_s)
        self._left[key] = max(self._left.get(key, voucher.amount) - units, 0.0)
        if voucher.daily_cap is not None:
            day = (voucher_id, local_day(datetime.fromtimestamp(at_s, UTC), self.tz))
            self._paid[day] = self._paid.get(day, 0.0) + units

    def adjust(self, voucher_id: str, at_s: float, amount: float) -> None:
        """A ``voucher_delta`` at ``at_s``: the instance in force then changes; a cut floors at 0."""
        voucher = self.vouchers[voucher_id]
        key = self._key(voucher, at_s)
        self._left[key] = max(self._left.get(key, voucher.amount) + amount, 0.0)

    def view(self, at_s: float) -> dict[str, float]:
        """Voucher id -> what it may pay for a start at ``at_s`` (what a policy sees as its balance)."""
        return {vid: self.payable(vid, at_s) for vid in self.vouchers}


class Reserved:
    """Units booked jobs mean to draw, per voucher and the period (a day, under a cap) they start in.

    ``reserved[voucher]`` is what is spoken for in the period holding ``clock()`` (what today's
    balance must keep for them); work booked for a later period draws on that period's fresh
    balance, not today's: ``renewed`` is what each voucher may pay once it next renews, less
    what is booked then.
    """

    def __init__(self, wallet: Wallet, clock: Callable[[], float], config: Config) -> None:
        self.wallet, self.clock, self.config = wallet, clock, config
        self._units: dict[tuple[str, object], float] = {}

    def _key(self, voucher_id: str, at_s: float) -> tuple[str, object]:
        voucher = self.wallet.vouchers[voucher_id]
        if voucher.daily_cap is not None:
            return voucher_id, local_day(datetime.fromtimestamp(at_s, UTC), self.wallet.tz)
        return self.wallet.period_key(voucher_id, at_s)

    def add(self, voucher_id: str, start_s: float, units: float) -> None:
        key = self._key(voucher_id, start_s)
        self._units[key] = self._units.get(key, 0.0) + units

    def __getitem__(self, voucher_id: str) -> float:
        return self._units.get(self._key(voucher_id, self.clock()), 0.0)

    def renewed(self, at_s: float) -> dict[str, float]:
        return {
            vid: self.wallet.payable(vid, edge) - self._units.get(self._key(vid, edge), 0.0)
            for vid, edge in renewals(self.config, at_s).items()
        }


class Prompts:
    """Each session's last served start, for the prompt-cache rule."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, str, float]] = {}  # session -> (region, model, start epoch s)
        self.follow = FollowUps()  # sessions' follow-ups seen so far

    def arrange(
        self, options: list[Option], ask: Ask, job: Job, load: Mapping[str, float], plan: Plan
    ) -> list[Option]:
        """A session's ``options`` credited with the next turn's saving where they leave its prompt."""
        if job.session is None:
            return options
        self.follow.seen(job.session, job.input_tokens, job.cached)
        return with_follow_ups(options, ask, self.follow, load, scarce_regions(plan, job.arrival_s))

    def cached(self, job: Job, offer: Offer, region: str, start_s: float) -> float:
        """Reference input tokens of ``job`` billed at the cached price if it starts as said."""
        if job.session is None or job.cached <= 0:
            return 0.0
        previous = self._last.get(job.session)
        hit = cache_hit(offer, region=region, model=job.model, start_s=start_s, previous=previous)
        return job.cached if hit else 0.0

    def served(self, job: Job, region: str, start_s: float) -> None:
        """``job`` started at ``region`` at ``start_s``: the session's prompt is cached there now."""
        if job.session is not None:
            self._last[job.session] = (region, job.model, start_s)

    def holder(self, job: Job, at_s: float, offers: dict[tuple[str, str], Offer]) -> str | None:
        """The region where ``job`` starting at ``at_s`` would hit its session's cache, if any.

        ``offers``: (region id, model) -> offer, for each offer's ``cache_ttl_s``.
        """
        if job.session is None or job.cached <= 0:
            return None
        found = self._last.get(job.session)
        if found is None or found[1] != job.model:
            return None
        offer = offers.get((found[0], found[1]))
        if offer is None or not 0.0 <= at_s - found[2] <= offer.cache_ttl_s:
            return None
        return found[0]
