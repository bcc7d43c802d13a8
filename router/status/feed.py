"""What the ledger's usage rows say about today: spend, savings, recent routing, 5-minute shares.

The feed reads only the rows settled since its last refresh (the ledger is the truth, so a
restarted server, or several replicas on one ledger, still report the whole day). Each row
is also replayed through the greedy chooser on shadow balances and the regions' per-minute
limits (as ``simulate --policy greedy`` does), to tell what the same traffic would have cost
under greedy routing, and priced at list price (no voucher, no
off-peak discount) at the region that served it.

A replay costs about a hundred microseconds a row, so the first refresh after a start replays
at most the last ``GREEDY_BACKFILL`` of today's rows; older ones count as greedy doing what
suanli did. The replay keeps to a virtual key's allowed regions and zones; the usage rows do
not record a ``REGION/MODEL`` pin, so greedy may send a pinned request elsewhere.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from suanli.config import Config
from suanli.optimizer import Ask, CapacityBook, State, minute_of, rank
from suanli.router.ledger.adjust import ADJUSTMENT_CLASS
from suanli.router.ledger.sqlite.ledger import Ledger, UsageRow

__all__ = ["DayTotals", "UsageFeed", "WindowRow"]

WINDOW_S = 300.0  # the "last 5 minutes" of the status document
HISTORY_H = 25  # hours of cash kept for the spend-rate alert (24 h of baseline + this hour)
RECENT = 50  # routing decisions kept for the monitor
GREEDY_BACKFILL = 20_000  # on the first refresh, replay at most this many of today's rows through greedy
_OVERLAP_S = 5.0  # re-read this much before the last row, in case another writer's clock lags


@dataclass(slots=True)
class DayTotals:
    """Sums over the rows settled since local midnight."""

    requests: int = 0
    tokens: int = 0
    cash_yuan: float = 0.0
    voucher_yuan: float = 0.0
    cost_yuan: float = 0.0
    list_yuan: float = 0.0
    greedy_cash_yuan: float = 0.0
    # voucher id -> [units, yuan] drawn today, by suanli and by greedy's counterfactual
    drawn: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))
    greedy_drawn: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))
    by_region: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(_region_sums))


def _region_sums() -> dict[str, float]:
    return {"requests": 0, "tokens": 0, "cash_yuan": 0.0, "cost_yuan": 0.0, "voucher_yuan": 0.0}


@dataclass(frozen=True, slots=True)
class WindowRow:
    """A settled request as the 5-minute window keeps it."""

    time_s: float
    region: str
    work_class: str
    tokens: int
    latency_ms: float
    ttft_ms: float | None


class UsageFeed:
    """Incremental aggregates over the ledger's usage rows; ``refresh`` before reading them."""

    def __init__(self, config: Config, *, greedy_backfill: int = GREEDY_BACKFILL) -> None:
        self.config = config
        self._greedy_backfill = greedy_backfill
        self._tz = ZoneInfo(config.timezone)
        self._last_id = 0
        self._last_time_s: float | None = None
        self._day: object = None
        self._day_start_s = 0.0
        self.today = DayTotals()
        self.window: deque[WindowRow] = deque()
        self.recent: deque[dict] = deque(maxlen=RECENT)
        self.minute_cash: dict[int, float] = defaultdict(float)  # epoch minute -> cash yuan settled in it
        self._shadow: dict[str, float] = {}  # voucher id -> balance the greedy policy would have left
        self._greedy_book = CapacityBook(config)  # what greedy started per region and clock minute
        self._allowed: dict[str, frozenset[str] | None] = {}  # key id -> regions it may use (None: any)

    def refresh(self, ledger: Ledger, now: datetime) -> int:
        """Read the rows settled since the last refresh; how many were new."""
        now_s = now.timestamp()
        first = self._last_time_s is None
        if first:
            # An hour a read: the ledger's lock is shared with the event loop's writes.
            start = now - timedelta(hours=HISTORY_H)
            rows = []
            for hour in range(HISTORY_H):
                since = start + timedelta(hours=hour)
                rows += ledger.usage(since=since, until=since + timedelta(hours=1))
            rows += ledger.usage(since=start + timedelta(hours=HISTORY_H))
        else:
            since = datetime.fromtimestamp(self._last_time_s - _OVERLAP_S, now.tzinfo)
            rows = [r for r in ledger.usage(since=since) if r.id > self._last_id]
        unknown = {r.key_id for r in rows if r.key_id is not None and r.key_id not in self._allowed}
        if unknown:
            self._load_keys(ledger)
            for key_id in unknown:  # the master key, or a key gone from the ledger: no restriction
                self._allowed.setdefault(key_id, None)
        if first or self._day != now.astimezone(self._tz).date():
            self._start_day(ledger, now, rows if first else [])
        replay_from = len(rows) - self._greedy_backfill if first else 0
        for n, row in enumerate(rows):
            self._ingest(row, replay=n >= replay_from)
        self._prune(now_s)
        if self._last_time_s is None:
            self._last_time_s = now_s
        return len(rows)

    def _load_keys(self, ledger: Ledger) -> None:
        """Each virtual key's residency, so the greedy replay keeps to it as the request did."""
        keys = getattr(ledger, "keys", None)
        for key in keys() if keys is not None else ():
            if key.allowed_regions is None and key.allowed_zones is None:
                self._allowed[key.id] = None
                continue
            self._allowed[key.id] = frozenset(
                r.id
                for r in self.config.regions
                if (key.allowed_regions is None or r.id in key.allowed_regions)
                and (key.allowed_zones is None or r.zone in key.allowed_zones)
            )

    def _start_day(self, ledger: Ledger, now: datetime, backlog: list[UsageRow]) -> None:
        local = now.astimezone(self._tz)
        self._day = local.date()
        self._day_start_s = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        self.today = DayTotals()
        # Greedy starts the day with the balances the vouchers had at midnight: today's
        # rows in the backlog are about to be replayed, so give back what they drew.
        balances = {status.id: status.balance for status in ledger.vouchers()}
        for row in backlog:
            if row.voucher_id is not None and row.time.timestamp() >= self._day_start_s \
                    and row.work_class != ADJUSTMENT_CLASS:
                balances[row.voucher_id] = balances.get(row.voucher_id, 0.0) + row.voucher_units
        self._shadow = balances
        self._greedy_book = CapacityBook(self.config)

    def _ingest(self, row: UsageRow, *, replay: bool = True) -> None:
        t = row.time.timestamp()
        self._last_id = max(self._last_id, row.id)
        if row.work_class == ADJUSTMENT_CLASS:
            return  # an operator's top-up or cut, not a request: the voucher list shows its balance
        self._last_time_s = max(self._last_time_s or t, t)
        self.minute_cash[int(t // 60)] += row.cash_yuan
        self.window.append(WindowRow(t, row.region, row.work_class, row.tokens, row.latency_ms, row.ttft_ms))
        self.recent.append(_decision(row))
        if t < self._day_start_s:
            return
        day = self.today
        day.requests += 1
        day.tokens += row.tokens
        day.cash_yuan += row.cash_yuan
        day.voucher_yuan += row.voucher_yuan
        day.cost_yuan += row.cost_yuan
        day.list_yuan += self._list_yuan(row)
        day.greedy_cash_yuan += self._greedy_cash(row) if replay else self._as_served(row)
        if row.voucher_id is not None:
            drawn = day.drawn[row.voucher_id]
            drawn[0] += row.voucher_units
            drawn[1] += row.voucher_yuan
        sums = day.by_region[row.region]
        sums["requests"] += 1
        sums["tokens"] += row.tokens
        sums["cash_yuan"] += row.cash_yuan
        sums["cost_yuan"] += row.cost_yuan
        sums["voucher_yuan"] += row.voucher_yuan

    def _prune(self, now_s: float) -> None:
        self._greedy_book.forget_before(minute_of(now_s) - 1)
        while self.window and self.window[0].time_s < now_s - WINDOW_S:
            self.window.popleft()
        oldest = int(now_s // 60) - HISTORY_H * 60
        for minute in [m for m in self.minute_cash if m < oldest]:
            del self.minute_cash[minute]

    def _list_yuan(self, row: UsageRow) -> float:
        region = self.config.region(row.region)
        offer = region.offer(row.model) if region is not None else None
        if offer is None:
            return row.cost_yuan
        if row.work_class == "training":
            return row.prompt_tokens * offer.price.train / 1e6
        return (row.prompt_tokens * offer.price.input + row.completion_tokens * offer.price.output) / 1e6

    def _greedy_cash(self, row: UsageRow) -> float:
        """Cash the greedy policy would have paid for this row, drawing on its own balances."""
        region = self.config.region(row.region)
        offer = region.offer(row.model) if region is not None else None
        if offer is None or row.origin not in ("east", "west"):
            return row.cash_yuan
        ratio = offer.token_ratio
        embedding = (
            row.completion_tokens == 0 and offer.price.output == 0 and "embeddings" in region.capabilities
        )
        ask = Ask(
            model=row.model,
            work_class=row.work_class,  # type: ignore[arg-type]
            origin=row.origin,  # type: ignore[arg-type]
            input_tokens=row.prompt_tokens / ratio,
            output_tokens=row.completion_tokens / ratio,
            capability="embeddings" if embedding else "chat",
            allowed_regions=self._allowed.get(row.key_id) if row.key_id is not None else None,
        )
        started = row.time - timedelta(milliseconds=row.latency_ms)
        options = rank(self.config, ask, State(balances=self._shadow), started)
        # As simulate's greedy: the cheapest region with room in the clock minute of the start
        # (the limits bind greedy as they bound suanli), the rest of the options in turn.
        minute = minute_of(started.timestamp())
        options = [o for o in options if self._greedy_book.fits(o.region.id, minute, o.charge.tokens)]
        if not options:
            return row.cash_yuan  # greedy could not have served it either: count it as paid
        best = options[0]
        self._greedy_book.add(best.region.id, minute, best.charge.tokens)
        if best.voucher is not None and best.charge.voucher_units > 0:
            self._shadow[best.voucher.id] = self._shadow.get(best.voucher.id, 0.0) - best.charge.voucher_units
            drawn = self.today.greedy_drawn[best.voucher.id]
            drawn[0] += best.charge.voucher_units
            drawn[1] += best.charge.voucher_yuan
        return best.charge.cash_yuan

    def _as_served(self, row: UsageRow) -> float:
        """A row too old to replay counts as greedy having done what suanli did (no saving)."""
        if row.voucher_id is not None:
            self._shadow[row.voucher_id] = self._shadow.get(row.voucher_id, 0.0) - row.voucher_units
            drawn = self.today.greedy_drawn[row.voucher_id]
            drawn[0] += row.voucher_units
            drawn[1] += row.voucher_yuan
        return row.cash_yuan

    def vouchers_kept_vs_greedy(self, now_s: float) -> float:
        """Yuan of voucher balance suanli still holds that greedy would have spent today
        (negative: suanli drew more than greedy), each unit valued at what greedy drew per
        unit of that voucher (suanli's own rate where greedy drew none). A voucher past its
        expiry keeps nothing: units it still held are lost, not kept."""
        kept = 0.0
        day = self.today
        for voucher in self.config.vouchers:
            ours = day.drawn.get(voucher.id, (0.0, 0.0))
            theirs = day.greedy_drawn.get(voucher.id, (0.0, 0.0))
            units = theirs[0] - ours[0]
            if abs(units) < 1e-9 or (voucher.expires is not None and voucher.expires.timestamp() <= now_s):
                continue
            rate_from = theirs if units > 0 and theirs[0] > 0 else ours if ours[0] > 0 else theirs
            if rate_from[0] > 0:
                kept += units * rate_from[1] / rate_from[0]
        return kept

    def usual_hourly_cash(self, now_s: float) -> tuple[float, float]:
        """``(cash in the last 60 minutes, mean hourly cash over the 24 hours before them)``."""
        minute = int(now_s // 60)
        last = baseline = 0.0
        for m, cash in self.minute_cash.items():
            if m > minute - 60:
                last += cash
            elif m > minute - HISTORY_H * 60:
                baseline += cash
        return last, baseline / (HISTORY_H - 1)


def _decision(row: UsageRow) -> dict:
    return {
        "time": row.time.isoformat(),
        "request_id": row.request_id,
        "key": row.key_id,
        "region": row.region,
        "model": row.model,
        "class": row.work_class,
        "origin": row.origin,
        "voucher": row.voucher_id,
        "tokens": row.tokens,
        "cost_yuan": row.cost_yuan,
        "cash_yuan": row.cash_yuan,
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "attempts": row.attempts,
        "status": row.status,
    }
