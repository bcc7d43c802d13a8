"""Reading a replay trace (JSON lines, DESIGN.md's ``suanli/v1``) into optimizer jobs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from suanli.config import Config
from suanli.optimizer import Job

__all__ = [
    "EVENT_FIELDS",
    "FORMAT",
    "HEADER_FIELDS",
    "REQUEST_FIELDS",
    "Event",
    "Trace",
    "TraceError",
    "load_trace",
    "parse_trace",
    "span_end",
]

_CLASSES = ("interactive", "batch", "training")
_ORIGINS = ("east", "west")
FORMAT = "suanli/v1"
# The fields of each kind of line (DESIGN.md): a name outside these is a typo, never ignored.
HEADER_FIELDS = {"required": frozenset({"trace", "start"}), "optional": frozenset()}
REQUEST_FIELDS = {
    "required": frozenset({"t", "model", "class", "origin", "input", "output"}),
    "optional": frozenset({"deadline_s", "session", "cached"}),
}
EVENT_FIELDS = {  # event kind -> its fields besides "event"
    "region_down": {"required": frozenset({"t", "region", "until"}), "optional": frozenset()},
    "voucher_delta": {"required": frozenset({"t", "voucher", "amount"}), "optional": frozenset()},
    "price_factor": {
        "required": frozenset({"t", "region", "factor", "until"}),
        "optional": frozenset({"model"}),
    },
}
_EVENTS = tuple(EVENT_FIELDS)


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
    """Parse trace lines: a header, then requests in time order.

    Strict: a missing or unknown field, a wrong type or a bad value is a ``TraceError`` naming
    the line (1-based, blank lines counted), so a trace with guessed field names is refused
    rather than replayed as zero tokens.
    """
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise TraceError("the trace is empty: it needs a header line")
    first, head = numbered[0]
    try:
        header = _object(head)
        _check_fields(header, HEADER_FIELDS, "header")
        if header["trace"] != FORMAT:
            raise ValueError(f"trace must be {FORMAT!r}, not {header['trace']!r}")
        start = datetime.fromisoformat(header["start"])
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise TraceError(f"line {first}: bad header: {exc}") from exc
    if start.tzinfo is None:
        from zoneinfo import ZoneInfo

        start = start.replace(tzinfo=ZoneInfo(config.timezone))
    start_s = start.timestamp()
    jobs: list[Job] = []
    offsets: list[float] = []
    deadlines: list[float] = []
    events: list[Event] = []
    for line_no, row in numbered[1:]:
        try:
            item = _object(row)
            if "event" in item:
                _check_event(item)
                events.append(_event(item, _number(item, "t"), start_s, config))
                continue
            _check_fields(item, REQUEST_FIELDS, "request")
            t = _number(item, "t")
            work_class = item["class"]
            if work_class not in _CLASSES:
                raise ValueError(f"class must be one of {', '.join(_CLASSES)}, not {work_class!r}")
            if item["origin"] not in _ORIGINS:
                raise ValueError(f"origin must be east or west, not {item['origin']!r}")
            if not isinstance(item["model"], str) or not item["model"]:
                raise ValueError("model must be a non-empty string")
            deadline = 0.0
            if work_class != "interactive":
                given = _number(item, "deadline_s") if "deadline_s" in item else None
                deadline = given or config.classes.deadline_s(work_class)
            session, cached = _session(item)
            job = Job(
                index=len(jobs),
                arrival_s=start_s + t,
                latest_s=start_s + t + deadline,
                model=item["model"],
                work_class=work_class,
                origin=item["origin"],
                input_tokens=_number(item, "input"),
                output_tokens=_number(item, "output"),
                session=session,
                cached=cached,
            )
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            raise TraceError(f"line {line_no}: {exc}") from exc
        jobs.append(job)
        offsets.append(t)
        deadlines.append(deadline)
    events.sort(key=lambda e: e.rel_s)  # stable: trace order among equal times
    return Trace(
        start=start,
        start_s=start_s,
        jobs=tuple(jobs),
        offsets_s=tuple(offsets),
        deadlines_s=tuple(deadlines),
        events=tuple(events),
    )


def _object(row: str) -> dict:
    item = orjson.loads(row)
    if not isinstance(item, dict):
        raise ValueError(f"a line must be a JSON object, not {type(item).__name__}")
    return item


def _check_fields(item: dict, fields: dict[str, frozenset[str]], what: str) -> None:
    missing = sorted(fields["required"] - item.keys())
    unknown = sorted(item.keys() - fields["required"] - fields["optional"])
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        known = ", ".join(sorted(fields["required"] | fields["optional"]))
        problems.append(f"unknown {', '.join(unknown)} (a {what} line has {known})")
    if problems:
        raise ValueError(f"{what} line: " + "; ".join(problems))


def _check_event(item: dict) -> None:
    kind = item["event"]
    if kind not in EVENT_FIELDS:
        raise ValueError(f"unknown event {kind!r} (known: {', '.join(EVENT_FIELDS)})")
    fields = EVENT_FIELDS[kind]
    _check_fields(item, {"required": fields["required"] | {"event"}, "optional": fields["optional"]}, kind)


def _session(item: dict) -> tuple[str | None, float]:
    # "session" names a conversation; "cached" (its input tokens repeating the session's
    # previous prompt) needs one and cannot exceed the input
    session = item.get("session")
    if session is not None and (not isinstance(session, str) or not session):
        raise ValueError(f"session must be a non-empty string, not {session!r}")
    if "cached" not in item:
        return session, 0.0
    cached = _number(item, "cached")
    if cached > 0 and session is None:
        raise ValueError("cached needs a session (the conversation whose prompt it repeats)")
    if cached > _number(item, "input"):
        raise ValueError(f"cached {cached:g} exceeds input {_number(item, 'input'):g}")
    return session, cached


def _number(item: dict, name: str) -> float:
    value = item[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    return float(value)
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
