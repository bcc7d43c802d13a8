"""Reading a replay trace (JSON lines, DESIGN.md's ``suanli/v1``) into optimizer jobs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from suanli.config import Config
from suanli.optimizer import Job

__all__ = ["Event", "Trace", "TraceError", "load_trace", "parse_trace", "span_end"]

_CLASSES = ("interactive", "batch", "training")
_EVENTS = ("region_down", "voucher_delta", "price_factor")


@dataclass(frozen=True, slots=True)
class Event:
    """One shock line of DESIGN.md: ``region_down``, ``voucher_delta`` or ``price_factor``.

    ``rel_s``/``until_rel_s`` are seconds after the trace start (``until`` absent: for ever);
    ``at_s``/``until_s`` the same in epoch seconds.
    """

    kind: str
    rel_s: float
    at_s: float
    region: str | None = None
    voucher: str | None = None
    model: str | None = None
    amount: float = 0.0
    factor: float = 1.0
    until_rel_s: float = float("inf")
    until_s: float = float("inf")

    def active(self, epoch_s: float) -> bool:
        """Whether ``epoch_s`` lies in ``[at, until)``."""
        return self.at_s <= epoch_s < self.until_s


class TraceError(ValueError):
    """A trace that does not follow the ``suanli/v1`` format; names the line."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A parsed trace: the start, and one job per request line (times relative in ``offsets_s``)."""

    start: datetime
    start_s: float
    jobs: tuple[Job, ...]
    offsets_s: tuple[float, ...]  # trace line -> its ``t``
    deadlines_s: tuple[float, ...]  # trace line -> its start window length (0 for interactive)
    events: tuple[Event, ...] = ()  # shocks, in time order (trace order among equal times)


def span_end(trace: Trace) -> float:
    """The end of the trace's span (epoch s): its start to its last arrival, rounded up to the hour."""
    last = trace.offsets_s[-1] if trace.offsets_s else 0.0
    return trace.start_s + math.ceil(last / 3600.0) * 3600.0


def load_trace(path: str | Path, config: Config) -> Trace:
    """Read and parse the trace file at ``path``."""
    return parse_trace(Path(path).read_text(encoding="utf-8").splitlines(), config)


def parse_trace(lines: list[str], config: Config) -> Trace:
    """Parse trace lines: a header, then requests in time order."""
    rows = [line for line in lines if line.strip()]
    if not rows:
        raise TraceError("the trace is empty: it needs a header line")
    try:
        header = orjson.loads(rows[0])
        start = datetime.fromisoformat(header["start"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TraceError(f"line 1: bad header ({exc})") from exc
    if start.tzinfo is None:
        from zoneinfo import ZoneInfo

        start = start.replace(tzinfo=ZoneInfo(config.timezone))
    start_s = start.timestamp()
    jobs: list[Job] = []
    offsets: list[float] = []
    deadlines: list[float] = []
    events: list[Event] = []
    n = 0
    for line, row in enumerate(rows[1:], start=2):
        try:
            item = orjson.loads(row)
            t = float(item["t"])
            if "event" in item:
                events.append(_event(item, t, start_s, config))
                continue
            work_class = item.get("class", "interactive")
            if work_class not in _CLASSES:
                raise ValueError(f"unknown class {work_class!r}")
            deadline = 0.0
            if work_class != "interactive":
                deadline = float(item.get("deadline_s") or config.classes.deadline_s(work_class))
            job = Job(
                index=n,
                arrival_s=start_s + t,
                latest_s=start_s + t + deadline,
                model=str(item["model"]),
                work_class=work_class,
                origin=item.get("origin") or config.origin,
                input_tokens=float(item.get("input", 0)),
                output_tokens=float(item.get("output", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"line {line}: {exc}") from exc
        jobs.append(job)
        offsets.append(t)
        deadlines.append(deadline)
        n += 1
    events.sort(key=lambda e: e.rel_s)  # stable: trace order among equal times
    return Trace(
        start=start,
        start_s=start_s,
        jobs=tuple(jobs),
        offsets_s=tuple(offsets),
        deadlines_s=tuple(deadlines),
        events=tuple(events),
    )


def _event(item: dict, t: float, start_s: float, config: Config) -> Event:
    # one shock line, its names checked against the config
    kind = item["event"]
    if kind not in _EVENTS:
        raise ValueError(f"unknown event {kind!r}; one of {', '.join(_EVENTS)}")
    until = item.get("until")
    until_rel = float(until) if until is not None else float("inf")
    if until_rel < t:
        raise ValueError(f"until {until_rel} before t {t}")
    common = {"kind": kind, "rel_s": t, "at_s": start_s + t}
    common |= {"until_rel_s": until_rel, "until_s": start_s + until_rel}
    if kind == "voucher_delta":
        voucher = str(item["voucher"])
        if voucher not in {v.id for v in config.vouchers}:
            raise ValueError(f"unknown voucher {voucher!r}")
        return Event(**common, voucher=voucher, amount=float(item["amount"]))
    region = str(item["region"])
    if region not in {r.id for r in config.regions}:
        raise ValueError(f"unknown region {region!r}")
    if kind == "region_down":
        return Event(**common, region=region)
    factor = float(item["factor"])
    if not factor >= 0:
        raise ValueError(f"factor must be >= 0, not {factor}")
    model = item.get("model")
    return Event(**common, region=region, model=str(model) if model is not None else None, factor=factor)
