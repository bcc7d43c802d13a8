"""The two sides of a live replay's comparison, and the scenario day both replay.

``simulate_side`` is the paper (``suanli simulate --policy optimizer``); ``Side`` holds either
side's figures and ``compare`` lays one table row out of two. ``cut`` and ``thin`` shape the
day (its first hours; one request in N on a config scaled to match), ``live_config`` paces
the sims' output, ``load_scenario`` reads a scenario folder with a ledger of its own.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from suanli.config import Config, SimBehaviour, load_config
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import Trace, load_trace

__all__ = ["Side", "compare", "cut", "live_config", "load_scenario", "simulate_side", "thin"]


@dataclass(slots=True)
class Side:
    """One side of the comparison (live or simulate), on the same requests."""

    requests: int = 0
    cash_yuan: float = 0.0
    cash_by_class: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    rejected: int = 0  # interactive requests not served
    slo_misses: int = 0
    slo_measured: int = 0  # interactive answers whose first token was timed
    deadline_misses: int = 0
    where: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # class -> region -> n


def simulate_side(config: Config, trace: Trace) -> Side:
    """``suanli simulate --policy optimizer`` on the trace, training left out."""
    result = replay(config, trace, "optimizer")
    side = Side()
    for decision in result.decisions:
        job = trace.jobs[decision.i]
        if job.work_class == "training":
            continue
        side.requests += 1
        if decision.region is None:
            if job.work_class == "interactive":
                side.rejected += 1
            else:
                side.deadline_misses += 1
            continue
        side.cash_yuan += decision.cash_yuan
        side.cash_by_class[job.work_class] += decision.cash_yuan
        side.where[job.work_class][decision.region] += 1
    return side


def cut(trace: Trace, hours: float | None) -> Trace:
    """The trace's first ``hours`` (all of it for None)."""
    if hours is None:
        return trace
    n = sum(1 for t in trace.offsets_s if t < hours * 3600.0)
    return replace(
        trace, jobs=trace.jobs[:n], offsets_s=trace.offsets_s[:n], deadlines_s=trace.deadlines_s[:n]
    )


def thin(config: Config, trace: Trace, every: int) -> tuple[Config, Trace]:
    """One request in ``every`` of the trace, on a config scaled to match: each region's
    per-minute limits, each voucher's amount and each demand prior divided by ``every``.

    The same economy at a lower rate: a laptop's two cores can then carry the proxy, the
    sims and the client at real first-token latencies. Both sides of the comparison replay
    the thinned pair, so it compares like with like (``every`` = 1: the whole day).
    """
    if every <= 1:
        return config, trace
    picked = range(0, len(trace.jobs), every)
    jobs = tuple(replace(trace.jobs[i], index=n) for n, i in enumerate(picked))

    def limits(region):  # noqa: ANN001, ANN202 - a config Region
        lim = region.limits
        scaled = {
            "rpm": None if lim.rpm is None else max(1, round(lim.rpm / every)),
            "tpm": None if lim.tpm is None else max(1, round(lim.tpm / every)),
        }
        return region.model_copy(update={"limits": lim.model_copy(update=scaled)})

    scaled = config.model_copy(update={
        "regions": tuple(limits(r) for r in config.regions),
        "vouchers": tuple(v.model_copy(update={"amount": v.amount / every}) for v in config.vouchers),
        "demand": tuple(d.model_copy(update={"requests_per_hour": d.requests_per_hour / every})
                        for d in config.demand),
    })
    return scaled, replace(
        trace, jobs=jobs, offsets_s=tuple(trace.offsets_s[i] for i in picked),
        deadlines_s=tuple(trace.deadlines_s[i] for i in picked),
    )


def live_config(config: Config, pace: float) -> Config:
    """The scenario's config as the live replay runs it (the sims' output pace scaled)."""
    regions = []
    for region in config.regions:
        sim = region.sim or SimBehaviour()
        paced = sim.model_copy(update={"ms_per_token": sim.ms_per_token * pace})
        regions.append(region.model_copy(update={"sim": paced}))
    return config.model_copy(update={"regions": tuple(regions)})


def load_scenario(directory: Path, ledger_dir: Path | None = None) -> tuple[Config, Trace]:
    """A scenario's config (its ledger in ``ledger_dir``, a fresh temporary folder by default) and trace."""
    raw = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
    folder = ledger_dir or Path(tempfile.mkdtemp(prefix=f"suanli-live-{directory.name}-"))
    raw["ledger"] = {"url": f"sqlite:///{folder / 'ledger.db'}"}
    config = load_config(raw)
    return config, load_trace(directory / "trace.jsonl", config)


def compare(live: Side, paper: Side) -> dict[str, float | int | str]:
    """The figures of one table row."""
    if paper.cash_yuan > 1e-9:
        ratio = live.cash_yuan / paper.cash_yuan
    else:
        ratio = 1.0 if live.cash_yuan <= 1e-9 else math.inf
    return {
        "cash_live": round(live.cash_yuan, 4),
        "cash_sim": round(paper.cash_yuan, 4),
        "ratio": round(ratio, 4),
        "rejected_live": live.rejected,
        "rejected_sim": paper.rejected,
        "slo_live": f"{live.slo_misses}/{live.slo_measured}",
        "miss_live": live.deadline_misses,
        "miss_sim": paper.deadline_misses,
    }
