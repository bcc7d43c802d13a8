"""A forecast that has seen the first hours of a day, as the replay's optimizer would have."""

from __future__ import annotations

from suanli.config import Config
from suanli.optimizer import Forecast
from suanli.router.simulate.trace import Trace, span_end


def learned_forecast(config: Config, trace: Trace, hours: float = 4.0) -> tuple[Forecast, float]:
    """The forecast after the trace's first ``hours`` of arrivals, and that moment (epoch s)."""
    forecast = Forecast(config, start_s=trace.start_s, end_s=span_end(trace))
    now = trace.start_s + hours * 3600.0
    for job in trace.jobs:
        if job.arrival_s <= now:
            forecast.observe_job(job)
    return forecast, now
