"""Reading a replay trace (JSON lines, DESIGN.md's ``suanli/v1``) into optimizer jobs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from suanli.config import Config
from suanli.optimizer import Job

__all__ = ["Trace", "TraceError", "load_trace", "parse_trace", "span_end"]

_CLASSES = ("interactive", "batch", "training")


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
    for n, row in enumerate(rows[1:]):
        try:
            item = orjson.loads(row)
            t = float(item["t"])
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
            raise TraceError(f"line {n + 2}: {exc}") from exc
        jobs.append(job)
        offsets.append(t)
        deadlines.append(deadline)
    return Trace(
        start=start, start_s=start_s, jobs=tuple(jobs), offsets_s=tuple(offsets), deadlines_s=tuple(deadlines)
    )
