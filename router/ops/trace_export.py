"""``suanli trace export``: the ledger's usage rows turned into a ``suanli/v1`` trace.

Each settled request becomes one request line of DESIGN.md's replay contract:

- ``t``: when the request arrived, seconds after ``--since``. An answered request arrived
  when it started: when its ledger hold was made (``read_starts``; the router's clock, as the
  settle time is), else its settle time less its latency. A batch line arrived with its batch
  (``wl_batches.created_at``) and a fine-tuning job with the job. The trace holds the
  requests that arrived in ``[since, until)``, wherever they settled (deferred work runs later).
  The latency is measured in real seconds: on an accelerated clock (a live replay, a day in
  minutes) the settle time less it put requests up to 4.5 replayed minutes late, moving them
  into other clock minutes (capacity) than the ones they started in.
- ``input``/``output``: *reference* tokens, the ledger's counts (the serving model's tokens)
  divided by the serving offer's ``token_ratio``, so a replay may send them to another region.
- ``deadline_s``: batch and training only; the batch's window (``expires_at - created_at``),
  the job's own deadline, else left out (the class default applies).
- ``session``/``cached``: where the ledger's row knows them.

The export is strict (``parse_trace`` reads it back, ``suanli simulate`` replays it) and
keeps beside the lines what a trace has no field for: each request's key and the ledger's
own cash, so ``whatif`` can say which keys a scenario hurts and how far the base replay is
from what was paid.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from suanli.config import Config
from suanli.router.ledger.types import UsageRow
from suanli.router.simulate.trace import FORMAT

__all__ = [
    "ExportedTrace",
    "Window",
    "day_bounds",
    "export_trace",
    "read_starts",
    "read_usage",
    "read_windows",
    "settled_until",
]


@dataclass(frozen=True, slots=True)
class Window:
    """When a deferrable request arrived and by when it had to start (epoch seconds)."""

    arrival_s: float
    latest_s: float


@dataclass(slots=True)
class ExportedTrace:
    """A trace made from usage rows, and what the rows said that a trace line cannot carry."""

    start: datetime
    lines: list[str]  # the header, then one request line per row, in time order
    keys: list[str | None] = field(default_factory=list)  # request i -> the key that sent it
    ledger_cash: list[float] = field(default_factory=list)  # request i -> cash the ledger recorded
    ledger_region: list[str] = field(default_factory=list)  # request i -> where it was served
    reference_tokens: float = 0.0  # sum of input + output over the requests
    skipped: dict[str, int] = field(default_factory=dict)  # why -> rows left out

    @property
    def requests(self) -> int:
        return len(self.lines) - 1

    @property
    def cash_yuan(self) -> float:
        """What the ledger recorded for the exported requests."""
        return math.fsum(self.ledger_cash)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def export_trace(
    rows: Iterable[UsageRow],
    config: Config,
    *,
    since: datetime,
    until: datetime | None = None,
    windows: Mapping[str, Window] | None = None,
    starts: Mapping[str, float] | None = None,
) -> ExportedTrace:
    """The trace of the ``rows`` that *arrived* in ``[since, until)``, against ``config``'s offers.

    Pass every row settled from ``since`` until the last deferred work of the period has run
    (``settled_until``): a batch line that arrived in the day may run in the night after it.
    ``starts``: hold id -> when the hold was made (epoch s, ``read_starts``).
    """
    tz = ZoneInfo(config.timezone)
    start = since.astimezone(tz)
    start_s = start.timestamp()
    ratios = {(r.id, o.name): o.token_ratio for r in config.regions for o in r.models}
    offered = {o.name for r in config.regions for o in r.models}
    windows = windows or {}
    starts = starts or {}
    items: list[tuple[float, int, dict, UsageRow]] = []
    skipped: dict[str, int] = {}
    end_s = until.timestamp() if until is not None else float("inf")
    for n, row in enumerate(rows):
        why = None
        if row.model not in offered:
            why = "model not in the config"
        else:
            ratio = ratios.get((row.region, row.model), 1.0)
            line, arrival_s = _line(row, config, ratio, windows, start_s, starts.get(row.hold_id))
            if not start_s <= arrival_s < end_s:
                why = "arrived outside the period"
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        items.append((line["t"], n, line, row))
    items.sort(key=lambda item: (item[0], item[1]))
    header = orjson.dumps({"trace": FORMAT, "start": start.isoformat()}).decode()
    out = ExportedTrace(start=start, lines=[header], skipped=skipped)
    for _, _, line, row in items:
        out.lines.append(orjson.dumps(line).decode())
        out.keys.append(row.key_id)
        out.ledger_cash.append(row.cash_yuan)
        out.ledger_region.append(row.region)
        out.reference_tokens += line["input"] + line["output"]
    return out


def _line(
    row: UsageRow,
    config: Config,
    ratio: float,
    windows: Mapping[str, Window],
    start_s: float,
    held_s: float | None,
) -> tuple[dict, float]:
    # the request line, and when the request arrived (epoch s)
    begun_s = held_s if held_s is not None else row.time.timestamp() - row.latency_ms / 1000.0
    window = windows.get(_workload_id(row))
    line: dict = {"t": 0.0, "model": row.model, "class": row.work_class, "origin": row.origin}
    # reference tokens: the serving model's count over its ratio (exact in binary for ratio 1)
    line["input"] = _reference(row.prompt_tokens, ratio)
    line["output"] = _reference(row.completion_tokens, ratio)
    arrival_s = begun_s
    if row.work_class != "interactive":
        if window is not None:
            arrival_s = min(window.arrival_s, begun_s)
            # the window must hold the start the ledger saw, whatever the clocks said
            latest_s = max(window.latest_s, begun_s)
        else:
            latest_s = arrival_s + config.classes.deadline_s(row.work_class)  # type: ignore[arg-type]
        line["deadline_s"] = round(max(latest_s - arrival_s, 1.0), 3)
    line["t"] = round(max(arrival_s - start_s, 0.0), 3)
    session = getattr(row, "session", None)  # rows of a build that records sessions
    if session:
        line["session"] = str(session)
        cached = getattr(row, "cached_tokens", 0) or 0
        if cached:
            line["cached"] = _reference(int(cached), ratio)
    return line, arrival_s


def _reference(tokens: int, ratio: float) -> float | int:
    value = tokens / ratio if ratio > 0 else float(tokens)
    return int(value) if value == int(value) else value


def _workload_id(row: UsageRow) -> str:
    # A batch line settles as ``{batch id}-{line no}``; a fine-tuning job as its job id.
    head, sep, tail = row.request_id.rpartition("-")
    if sep and tail.isdigit() and head.startswith("batch_"):
        return head
    return row.request_id


def read_windows(ledger_url: str) -> dict[str, Window]:
    """Batch and fine-tuning windows from the workload tables beside the ledger (none if absent).

    Keyed by batch id and job id. A PostgreSQL ledger keeps them in ``./suanli-data``.
    """
    from suanli.router.ledger.sqlite.schema import sqlite_path
    from suanli.router.workloads.db import data_dir_for

    try:
        path, _ = sqlite_path(ledger_url)
    except ValueError:
        path = str(data_dir_for(ledger_url) / "workloads.db")
    if path in ("", ":memory:") or not Path(path).is_file():
        return {}
    out: dict[str, Window] = {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        for batch_id, created, expires in _query(conn, "SELECT id, created_at, expires_at FROM wl_batches"):
            out[batch_id] = Window(float(created), float(expires))
        for job_id, created, deadline in _query(conn, "SELECT id, created_at, deadline_s FROM wl_ft_jobs"):
            out[job_id] = Window(float(created), float(created) + float(deadline))
    finally:
        conn.close()
    return out


def read_starts(ledger_url: str, *, since: datetime) -> dict[str, float]:
    """Hold id -> when it was made (epoch s), for the settled holds made from about ``since`` on.

    A hold is made when the router sends the request (the attempt that settled), on the same
    clock as the usage row's time. Empty when the ledger cannot be read this way.
    """
    from suanli.router.ledger.url import is_pg_url

    since_s = since.timestamp() - 3600.0  # an hour's margin: a hold made before the period is left out later
    if is_pg_url(ledger_url):
        import asyncio

        return asyncio.run(_pg_starts(ledger_url, since_s))
    from suanli.router.ledger.sqlite.schema import sqlite_path

    try:
        path, _ = sqlite_path(ledger_url)
    except ValueError:
        return {}
    if path in ("", ":memory:") or not Path(path).is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = _query(conn, f"{_STARTS} AND created >= {since_s!r}")
    finally:
        conn.close()
    return {hold_id: float(created) for hold_id, created in rows}


_STARTS = "SELECT id, created FROM holds WHERE state = 'settled'"


async def _pg_starts(url: str, since_s: float) -> dict[str, float]:
    import asyncpg

    from suanli.router.ledger.postgres.schema import connect, pg_url

    try:
        conn = await connect(pg_url(url))
    except (OSError, asyncpg.PostgresError):
        return {}
    try:
        rows = await conn.fetch(f"{_STARTS} AND created >= $1", since_s)
    except asyncpg.PostgresError:
        return {}
    finally:
        await conn.close()
    return {row["id"]: float(row["created"]) for row in rows}


def _query(conn: sqlite3.Connection, sql: str) -> Sequence[tuple]:
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Error:  # an older file without the workload tables
        return []


def settled_until(config: Config, until: datetime) -> datetime:
    """Until when work that arrived before ``until`` may still settle: its longest deadline, and an hour."""
    longest = max(config.classes.deadline_s("batch"), config.classes.deadline_s("training"))
    return until + timedelta(seconds=longest + 3600.0)


def read_usage(
    config: Config, *, since: datetime, until: datetime, command: str, config_path: str | None
) -> list[UsageRow]:
    """The usage rows settled in ``[since, until)`` of the ledger ``config`` names (either backend)."""
    from suanli.router.ops.audit_cli import read_book
    from suanli.router.ops.ledger_cli import reading_ledger

    with read_book(reading_ledger(config, command=command, config_path=config_path)) as ledger:
        return ledger.usage(since=since, until=until)


def day_bounds(
    text_since: str | None, text_until: str | None, tz: ZoneInfo, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """``--since``/``--until`` as the other ledger commands read them (default: the last 24 h)."""
    from suanli.router.ops.spend_report import parse_moment

    now = now or datetime.now(UTC)
    until = parse_moment(text_until, now=now, tz=tz) if text_until else now
    since = parse_moment(text_since, now=now, tz=tz) if text_since else until - timedelta(days=1)
    if since >= until:
        raise ValueError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    return since, until
