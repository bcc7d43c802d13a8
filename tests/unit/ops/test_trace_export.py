"""Usage rows to a ``suanli/v1`` trace: reference tokens, arrivals, deadlines, strictness."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import orjson
import pytest

from suanli.router.ledger.types import UsageRow
from suanli.router.ops.trace_export import Window, export_trace
from suanli.router.simulate.trace import parse_trace
from tests.harness import small_config
from tests.pg import drop_schema_sync, fresh_pg_url, requires_pg

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


def test_a_request_arrives_when_its_hold_was_made_on_any_clock(tmp_path) -> None:
    # A live replay runs a day in minutes: the settle time is on the accelerated clock, the
    # latency in real seconds. Reserved at 10:00:00 and settled 111 replayed seconds later
    # after 0.3 real seconds, the request started at 10:00:00, not at 10:01:50.7.
    from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement
    from suanli.router.ops.trace_export import read_starts

    now = [SINCE + timedelta(hours=10)]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.open(url, [], clock=lambda: now[0])
    hold = ledger.reserve(HoldRequest(request_id="req-1", region="wuhan", model="deepseek-flash",
                                      work_class="interactive", origin="east", voucher_id=None,
                                      voucher_units=0, key_id="key-a"))
    now[0] += timedelta(seconds=111.0)
    ledger.settle(hold.id, Settlement(prompt_tokens=1300, completion_tokens=260, tokens=1560, cost_yuan=0.01,
                                      cash_yuan=0.01, voucher_units=0, voucher_yuan=0, latency_ms=300.0,
                                      ttft_ms=None))
    rows = ledger.usage()
    ledger.close()
    starts = read_starts(url, since=SINCE)
    assert starts == {rows[0].hold_id: pytest.approx((SINCE + timedelta(hours=10)).timestamp())}
    config = small_config(tmp_path)
    held = export_trace(rows, config, since=SINCE, starts=starts)
    assert orjson.loads(held.lines[1])["t"] == 36000.0
    # without the hold's time: the settle time less the latency
    assert orjson.loads(export_trace(rows, config, since=SINCE).lines[1])["t"] == pytest.approx(36110.7)
    assert read_starts(f"sqlite:///{tmp_path / 'none.db'}", since=SINCE) == {}


@requires_pg
def test_read_starts_on_a_postgresql_ledger() -> None:
    from suanli.router.ledger.postgres.ledger import PgLedger
    from suanli.router.ledger.sqlite.ledger import HoldRequest, Settlement
    from suanli.router.ops.trace_export import read_starts

    url = fresh_pg_url()
    made = SINCE + timedelta(hours=3)

    async def serve_one() -> str:
        now = [made]
        ledger = await PgLedger.open(url, [], clock=lambda: now[0], sweep_s=None)
        ask = HoldRequest("req-1", "wuhan", "deepseek-flash", "interactive", "east", None, 0)
        hold = await ledger.reserve(ask)
        now[0] += timedelta(seconds=90.0)
        used = Settlement(prompt_tokens=10, completion_tokens=5, tokens=15, cost_yuan=0.01, cash_yuan=0.01,
                          voucher_units=0, voucher_yuan=0, latency_ms=250.0, ttft_ms=None)
        await ledger.settle(hold.id, used)
        await ledger.close()
        return hold.id

    try:
        hold_id = asyncio.run(serve_one())
        assert read_starts(url, since=SINCE) == {hold_id: pytest.approx(made.timestamp())}
        assert read_starts(url, since=SINCE + timedelta(hours=5)) == {}
    finally:
        drop_schema_sync(url)
