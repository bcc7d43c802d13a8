"""Usage rows to a ``suanli/v1`` trace: reference tokens, arrivals, deadlines, strictness."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pytest

from suanli.router.ledger.types import UsageRow
from suanli.router.ops.trace_export import Window, export_trace
from suanli.router.simulate.trace import parse_trace
from tests.harness import small_config

SINCE = datetime.fromisoformat("2026-12-01T00:00:00+08:00")


def row(
    n: int,
    *,
    at_s: float,
    region: str = "wuhan",
    work_class: str = "interactive",
    prompt: int = 1300,
    completion: int = 260,
    latency_ms: float = 500.0,
    request_id: str | None = None,
    cash: float = 0.01,
    key: str | None = "key-a",
) -> UsageRow:
    return UsageRow(
        id=n,
        request_id=request_id or f"req-{n}",
        time=SINCE + timedelta(seconds=at_s),
        key_id=key,
        region=region,
        model="deepseek-flash",
        work_class=work_class,
        origin="east",
        voucher_id=None,
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokens=prompt + completion,
        cost_yuan=cash,
        cash_yuan=cash,
        voucher_units=0.0,
        voucher_yuan=0.0,
        latency_ms=latency_ms,
        ttft_ms=None,
        attempts=1,
        status=200,
    )


def test_reference_tokens_divide_by_the_serving_offers_ratio(tmp_path) -> None:
    config = small_config(tmp_path)
    regions = [r.model_dump(mode="json") for r in config.regions]
    regions[1]["models"][0]["token_ratio"] = 1.3  # wuhan's deepseek-flash counts 1.3 per reference token
    config = small_config(tmp_path, regions=regions)
    trace = export_trace([row(1, at_s=100.0)], config, since=SINCE)
    line = orjson.loads(trace.lines[1])
    assert line["input"] == pytest.approx(1000.0) and line["output"] == pytest.approx(200.0)
    # replayed at the same region, the tokens count back to the ledger's, exactly
    job = parse_trace(trace.lines, config).jobs[0]
    assert round((job.input_tokens + job.output_tokens) * 1.3, 6) == 1560


def test_arrivals_are_starts_in_time_order_and_batch_keeps_its_window(tmp_path) -> None:
    config = small_config(tmp_path)
    rows = [
        row(1, at_s=300.0, latency_ms=2000.0),  # started at 298
        row(
            2, at_s=7200.0, work_class="batch", region="qingyang", request_id="batch_abc-3", latency_ms=1000.0
        ),
        row(3, at_s=50.0, key=None),
    ]
    windows = {
        "batch_abc": Window(arrival_s=SINCE.timestamp() + 600.0, latest_s=SINCE.timestamp() + 600.0 + 86400)
    }
    trace = export_trace(rows, config, since=SINCE, windows=windows)
    lines = [orjson.loads(x) for x in trace.lines[1:]]
    assert [x["t"] for x in lines] == [49.5, 298.0, 600.0]
    assert lines[2]["class"] == "batch" and lines[2]["deadline_s"] == 86400.0
    assert "deadline_s" not in lines[0]
    assert trace.keys == [None, "key-a", "key-a"]
    assert trace.ledger_region == ["wuhan", "wuhan", "qingyang"]
    parsed = parse_trace(trace.lines, config)
    assert len(parsed.jobs) == 3 and parsed.jobs[2].latest_s - parsed.jobs[2].arrival_s == 86400.0


def test_the_trace_holds_what_arrived_in_the_period_wherever_it_settled(tmp_path) -> None:
    config = small_config(tmp_path)
    until = SINCE + timedelta(days=1)
    windows = {
        "batch_x": Window(arrival_s=SINCE.timestamp() - 3600.0, latest_s=SINCE.timestamp() + 3600.0),
        "batch_y": Window(arrival_s=SINCE.timestamp() + 80000.0, latest_s=SINCE.timestamp() + 166400.0),
    }
    rows = [
        row(1, at_s=1800.0, work_class="batch", request_id="batch_x-0", latency_ms=0.0),  # yesterday's
        row(
            2, at_s=90000.0, work_class="batch", request_id="batch_y-0", latency_ms=0.0
        ),  # ran in the night after
        row(3, at_s=90000.0),  # tomorrow's
    ]
    trace = export_trace(rows, config, since=SINCE, until=until, windows=windows)
    assert trace.requests == 1
    line = orjson.loads(trace.lines[1])
    assert line["t"] == 80000.0 and line["deadline_s"] == 86400.0
    assert trace.skipped == {"arrived outside the period": 2}


def test_a_model_the_config_no_longer_offers_is_left_out_and_counted(tmp_path) -> None:
    config = small_config(tmp_path)
    gone = row(1, at_s=10.0)
    gone = UsageRow(**{**{f: getattr(gone, f) for f in gone.__dataclass_fields__}, "model": "retired-model"})
    trace = export_trace([gone, row(2, at_s=20.0)], config, since=SINCE)
    assert trace.requests == 1
    assert trace.skipped == {"model not in the config": 1}
