"""``suanli advise``: which city programmes the team qualifies for, how far it is, what each is worth.

From the ledger's usage rows over a period:

- **projection**: the team's spend (list cost, what it buys, voucher-paid included) per region
  and model, per day, with a least-squares trend over the days when the period has at least
  ``TREND_MIN_DAYS``; the next 365 days of that line (never below zero) is the annual projection;
- **qualifies now**: the projected annual spend at the programme's region reaches its minimum,
  and the stated revenue / team-size rule holds (unknown when the team did not say);
- **gap**: the minimum less the projection; **free move**: the spend that could move to the
  programme's region at no extra cash (requests served elsewhere whose list cost there is at
  most the cash they paid, the region eligible for their class and origin), annualised;
- **cost to close**: the least cash a year that moving enough of it there adds (cheapest
  moves first), to weigh against the voucher's value; None when all movable traffic falls short;
- **value**: the voucher's worth from ``valuation`` (the programme's rate up to its cap, a year).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from suanli.config import Config
from suanli.config.programmes import Programme, Programmes
from suanli.optimizer import Ask, State, eligible, list_cost_yuan, off_peak_active
from suanli.router.ledger.types import UsageRow

__all__ = [
    "Advice",
    "Projection",
    "TeamFacts",
    "advise",
    "cost_to_close",
    "movable_spend",
    "moves",
    "project",
]

TREND_MIN_DAYS = 14
YEAR_DAYS = 365.0


@dataclass(frozen=True, slots=True)
class TeamFacts:
    """What the ledger cannot say: the team's prior-year revenue and size (None: not given)."""

    revenue_yuan: float | None = None
    team_size: int | None = None


@dataclass(frozen=True, slots=True)
class Projection:
    """Annual spend projected from ``days`` of history: per day now and the trend per day."""

    days: float
    per_day_yuan: float
    trend_yuan_per_day2: float
    annual_yuan: float


@dataclass(frozen=True, slots=True)
class Advice:
    """One programme's line."""

    programme: str
    city: str
    region: str | None
    min_annual_spend_yuan: float | None
    projected_annual_spend_yuan: float  # at the programme's region
    qualifies: str  # yes | no | unknown
    why: str
    gap_yuan: float
    free_move_yuan: float  # annual spend that could move there at no extra cash
    gap_closed_by_move: bool
    close_cost_yuan: float | None  # least cash a year that moving enough traffic adds; None: cannot
    value_yuan: float | None  # the voucher's annual value on this traffic; None: not in the config
    lead_time_weeks: str
    startup_friendly: str
    estimates: list[str]  # the catalog figures used that are our estimates

    def as_json(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def project(
    rows: Sequence[UsageRow], *, since: datetime, until: datetime, tz: ZoneInfo, by: Callable[[UsageRow], str]
) -> dict[str, Projection]:
    """Annual spend per ``by(row)`` (a region, a region/model), from the rows' daily list cost."""
    days = max((until - since).total_seconds() / 86400.0, 1.0 / 24)
    first_day = since.astimezone(tz).date()
    daily: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        day = (row.time.astimezone(tz).date() - first_day).days
        daily[by(row)][day] += row.cost_yuan
    out = {}
    whole = max(int(math.ceil(days)), 1)
    for name, per_day in daily.items():
        mean = math.fsum(per_day.values()) / days
        slope = 0.0
        if days >= TREND_MIN_DAYS:
            xs = list(range(whole))
            ys = [per_day.get(x, 0.0) for x in xs]
            x_mean = (whole - 1) / 2.0
            var = math.fsum((x - x_mean) ** 2 for x in xs)
            slope = (
                math.fsum((x - x_mean) * (y - mean) for x, y in zip(xs, ys, strict=True)) / var
                if var
                else 0.0
            )
            now_level = mean + slope * (whole - 1 - x_mean)
        else:
            now_level = mean
        # the next year of the fitted line, floored at zero day by day
        annual = math.fsum(max(now_level + slope * (d + 1), 0.0) for d in range(int(YEAR_DAYS)))
        out[name] = Projection(
            days=days, per_day_yuan=now_level, trend_yuan_per_day2=slope, annual_yuan=annual
        )
    return out


def moves(rows: Sequence[UsageRow], config: Config, region: str) -> list[tuple[float, float]]:
    """For each row served elsewhere that ``region`` may serve: (its list cost there, the cash it adds).

    The cash added is what it would cost there less the cash it paid, never below zero.
    """
    if config.region(region) is None:
        return []
    tz = ZoneInfo(config.timezone)
    ratios = {(r.id, o.name): o.token_ratio for r in config.regions for o in r.models}
    out = []
    state = State(balances={})
    for row in rows:
        if row.region == region:
            continue
        ratio = ratios.get((row.region, row.model), 1.0)
        ask = Ask(
            row.model,
            row.work_class,
            row.origin,
            row.prompt_tokens / ratio,  # type: ignore[arg-type]
            row.completion_tokens / ratio,
        )
        for candidate, offer in eligible(config, ask, state):
            if candidate.id != region:
                continue
            off = off_peak_active(offer, row.time.astimezone(UTC), tz)
            there = list_cost_yuan(
                offer,
                ask.input_tokens,
                ask.output_tokens,
                row.work_class,  # type: ignore[arg-type]
                off_peak=off,
            )
            out.append((there, max(there - row.cash_yuan, 0.0)))
    return out


def movable_spend(rows: Sequence[UsageRow], config: Config, region: str) -> float:
    """List cost at ``region`` of the rows served elsewhere that could go there for no more cash."""
    return math.fsum(spend for spend, extra in moves(rows, config, region) if extra <= 1e-12)


def cost_to_close(found: Sequence[tuple[float, float]], gap: float) -> float | None:
    """The least cash added by moving enough spend (cheapest per yuan moved first) to close ``gap``;
    None when all of it would not close it."""
    if gap <= 0:
        return 0.0
    moved = cost = 0.0
    for spend, extra in sorted(found, key=lambda m: m[1] / m[0] if m[0] > 0 else math.inf):
        if spend <= 0:
            continue
        take = min(spend, gap - moved)
        cost += extra * take / spend
        moved += take
        if moved >= gap - 1e-9:
            return cost
    return None


def advise(
    config: Config,
    programmes: Programmes,
    rows: Sequence[UsageRow],
    *,
    since: datetime,
    until: datetime,
    team: TeamFacts = TeamFacts(),
    value: Callable[[Programme], float | None] | None = None,
) -> list[Advice]:
    """One line per programme, the nearest to reach first."""
    tz = ZoneInfo(config.timezone)
    by_region = project(rows, since=since, until=until, tz=tz, by=lambda r: r.region)
    days = max((until - since).total_seconds() / 86400.0, 1.0 / 24)
    out = []
    for programme in programmes.programmes:
        spend = by_region[programme.region].annual_yuan if programme.region in by_region else 0.0
        need = programme.eligibility.min_annual_spend_yuan
        minimum = need.value if need is not None else None
        gap = max((minimum or 0.0) - spend, 0.0)
        per_year = YEAR_DAYS / days
        found = (
            [(a * per_year, b * per_year) for a, b in moves(rows, config, programme.region)]
            if programme.region
            else []
        )
        free = math.fsum(spend for spend, extra in found if extra <= 1e-12)
        qualifies, why = _qualifies(programme, spend, team)
        out.append(
            Advice(
                programme=programme.id,
                city=programme.city,
                region=programme.region,
                min_annual_spend_yuan=minimum,
                projected_annual_spend_yuan=spend,
                qualifies=qualifies,
                why=why,
                gap_yuan=gap,
                free_move_yuan=free,
                gap_closed_by_move=gap > 0 and free >= gap,
                close_cost_yuan=cost_to_close(found, gap) if gap > 0 else 0.0,
                value_yuan=value(programme) if value is not None else None,
                lead_time_weeks=_weeks(programme),
                startup_friendly=programme.startup_friendly,
                estimates=_estimates(programme),
            )
        )
    order = {"yes": 0, "unknown": 1, "no": 2}
    return sorted(out, key=lambda a: (order[a.qualifies], a.gap_yuan, a.programme))


def _qualifies(programme: Programme, spend: float, team: TeamFacts) -> tuple[str, str]:
    rule = programme.eligibility
    if programme.region is None:
        return "no", f"{programme.city} is not a region of this config: no traffic there"
    if rule.min_annual_spend_yuan is not None and spend < rule.min_annual_spend_yuan.value:
        return (
            "no",
            f"projected {spend:,.0f} yuan a year there, below {rule.min_annual_spend_yuan.value:,.0f}",
        )
    checks = []
    if rule.min_prior_revenue_yuan is not None:
        checks.append(
            None if team.revenue_yuan is None else team.revenue_yuan >= rule.min_prior_revenue_yuan.value
        )
    if rule.min_team_size is not None:
        checks.append(None if team.team_size is None else team.team_size >= rule.min_team_size.value)
    if checks:
        if rule.revenue_or_team:
            if any(c is True for c in checks):
                return "yes", "spend, and revenue or team size, meet the rule"
            if all(c is False for c in checks):
                return "no", "neither revenue nor team size meets the rule"
        else:
            if any(c is False for c in checks):
                return "no", "revenue or team size below the rule"
            if all(c is True for c in checks):
                return "yes", "spend, revenue and team size meet the rule"
        return "unknown", "spend meets it; give --revenue / --team-size for the rest"
    if rule.company_size is not None:
        return "unknown", f"spend meets it; also: {rule.company_size.text}"
    if rule.min_annual_spend_yuan is None:
        return "unknown", "no eligibility rule published: ask the programme"
    return "yes", "spend meets the rule"


def _weeks(programme: Programme) -> str:
    if programme.lead_time_weeks is None:
        return "not published"
    lo, hi = programme.lead_time_weeks
    return f"{lo.value:g}-{hi.value:g}"


def _estimates(programme: Programme) -> list[str]:
    found = []
    gives = programme.gives
    for name, figure in (("rate", gives.rate), ("cap_yuan", gives.cap_yuan), ("pool_yuan", gives.pool_yuan)):
        if figure is not None and figure.estimate:
            found.append(f"gives.{name}")
    return found
