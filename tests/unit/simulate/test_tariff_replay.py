"""``suanli simulate`` under bands, the prompt cache, packages and daily caps: cash worked out by hand.

Each small trace is replayed through the CLI (``--decisions``) under every policy; every
decision passes the independent checker and the cash is the figure computed here from
DESIGN.md's rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from suanli.config import load_config
from suanli.router.ops.cli import main
from suanli.router.simulate.trace import TraceError, parse_trace
from tests.unit.optimizer.checker import check_decisions

POLICIES = ("optimizer", "greedy", "round_robin", "hindsight")
START = "2026-12-07T00:00:00+08:00"  # a Monday
SCENARIOS = Path(__file__).resolve().parents[3] / "benchmarks" / "scenarios"


def _region(rid: str, **offer: object) -> dict:
    model = {"name": "m", "price": {"input": 2.0, "output": 8.0}}
    model.update(offer)
    return {"id": rid, "zone": "east", "provider": "sim", "rtt_ms": {"east": 10}, "ttft_ms": 100,
            "capabilities": ["chat", "batch"], "models": [model]}


def _run(tmp_path: Path, config: dict, rows: list[dict], policy: str) -> tuple[list[dict], dict]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    lines = [json.dumps({"trace": "suanli/v1", "start": START})] + [json.dumps(r) for r in rows]
    trace.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / f"{policy}.jsonl"
    args = ["simulate", "--config", str(cfg), "--trace", str(trace), "--policy", policy,
            "--decisions", str(out), "--json"]
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    summary = json.loads(buffer.getvalue())
    decisions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    check = check_decisions(load_config(cfg), lines, [json.dumps(d) for d in decisions])
    assert check.violations == []
    return decisions, summary


def _req(t: float, **extra: object) -> dict:
    row = {"t": t, "model": "m", "class": "interactive", "origin": "east", "input": 1000, "output": 500}
    row.update(extra)
    return row


LIST = (1000 * 2.0 + 500 * 8.0) / 1e6  # 0.006 yuan at factor 1


@pytest.mark.parametrize("policy", POLICIES)
def test_weekday_peak_band_and_midnight_crossing_band(tmp_path: Path, policy: str):
    bands = [{"days": "weekdays", "window": "09:00-12:00", "factor": 2.0},
             {"days": ["sun"], "window": "22:00-02:00", "factor": 0.5}]
    config = {"regions": [_region("a", bands=bands)]}
    rows = [_req(9 * 3600.0),  # Monday 09:00: peak
            _req(12 * 3600.0),  # 12:00: the window's end, factor 1
            _req(3600.0),  # Monday 01:00: inside Sunday's window opened at 22:00
            _req(5 * 86400 + 10 * 3600.0)]  # Saturday 10:00: weekdays only
    rows.sort(key=lambda r: r["t"])
    decisions, _ = _run(tmp_path, {**config}, rows, policy)
    cash = [d["cash_yuan"] for d in decisions]
    assert cash == pytest.approx([0.5 * LIST, 2 * LIST, LIST, LIST])


@pytest.mark.parametrize("policy", POLICIES)
def test_cache_hits_follow_the_session_within_its_ttl(tmp_path: Path, policy: str):
    offer = {"price": {"input": 2.0, "output": 8.0, "cached_input": 0.2}, "cache_ttl_s": 300}
    config = {"regions": [_region("a", **offer)]}
    rows = [
        _req(0.0, session="s", cached=0),
        _req(300.0, session="s", cached=600),  # exactly the TTL after: a hit
        _req(700.0, session="s", cached=600),  # 400 s after the previous served start: a miss
        _req(710.0, session="t", cached=600),  # another session's first request: a miss
        _req(720.0, session="s", cached=600),  # 20 s after the miss: a hit again
    ]
    decisions, _ = _run(tmp_path, config, rows, policy)
    hit = (400 * 2.0 + 600 * 0.2 + 500 * 8.0) / 1e6
    assert [d["cash_yuan"] for d in decisions] == pytest.approx([LIST, hit, LIST, LIST, hit])


def test_follow_ups_stay_where_the_prompt_is_cached_only_while_it_pays(tmp_path: Path):
    # b is a little cheaper; a's cached input makes a follow-up there cheaper still
    a = _region("a", price={"input": 2.0, "output": 8.0, "cached_input": 0.2})
    b = _region("b", price={"input": 1.9, "output": 7.9, "cached_input": 0.19})
    config = {"regions": [a, b]}
    rows = [_req(0.0, session="s", cached=0), _req(60.0, session="s", cached=900)]
    for policy in ("greedy", "optimizer"):
        decisions, _ = _run(tmp_path, config, rows, policy)
        assert [d["region"] for d in decisions] == ["b", "b"]
        assert decisions[1]["cash_yuan"] == pytest.approx((100 * 1.9 + 900 * 0.19 + 500 * 7.9) / 1e6)


def test_a_rejected_request_does_not_move_the_cache(tmp_path: Path):
    # rpm 1: the second request in the same minute is rejected; the third still hits the first's cache
    region = _region("a", price={"input": 2.0, "output": 8.0, "cached_input": 0.2})
    region["limits"] = {"rpm": 1}
    rows = [_req(0.0, session="s"), _req(10.0, session="s", cached=600), _req(70.0, session="s", cached=600)]
    decisions, summary = _run(tmp_path, {"regions": [region]}, rows, "greedy")
    assert decisions[1]["region"] is None and summary["rejected"] == 1
    assert decisions[2]["cash_yuan"] == pytest.approx((400 * 2.0 + 600 * 0.2 + 500 * 8.0) / 1e6)


def _voucher(**extra: object) -> dict:
    data = {"id": "pack", "region": "a", "kind": "tokens", "amount": 2000,
            "valid_from": "2026-11-01T00:00:00+08:00", "expires": "2027-02-01T00:00:00+08:00"}
    data.update(extra)
    return data


@pytest.mark.parametrize("policy", POLICIES)
def test_daily_package_resets_at_local_midnight(tmp_path: Path, policy: str):
    # 2000 tokens a day, 1500 a request: the day's second request gets 500, the next day's first 1500
    config = {"regions": [_region("a")], "vouchers": [_voucher(period="day")]}
    rows = [_req(23 * 3600.0), _req(23 * 3600.0 + 3599), _req(24 * 3600.0)]
    decisions, summary = _run(tmp_path, config, rows, policy)
    if policy != "greedy":
        return  # exact by the checker; which requests a planning policy spends it on is its own choice
    assert [d["cash_yuan"] for d in decisions] == pytest.approx([0.0, LIST * 1000 / 1500, 0.0])
    assert summary["voucher_spent"]["pack"] == 3500
    assert summary["voucher_unused"]["pack"] == 500  # what is left of the last day's


def test_weekly_and_monthly_packages_reset_on_monday_and_the_first(tmp_path: Path):
    # Sunday 2026-12-06 23:00 then Monday 00:00 (week); 2026-11-30 then 2026-12-01 (month)
    for period, times in (("week", (-3600.0, 0.0)), ("month", (-7 * 86400 + 3600.0, -6 * 86400 + 0.0))):
        config = {"regions": [_region("a")], "vouchers": [_voucher(period=period, amount=1500)]}
        lines = [json.dumps({"trace": "suanli/v1", "start": "2026-11-29T00:00:00+08:00"})]
        base = 8 * 86400.0  # 2026-12-07 00:00 after the trace start
        rows = [_req(base + times[0]), _req(base + times[0] + 60), _req(base + times[1])]
        if period == "month":
            base = 2 * 86400.0 - 3600.0  # 2026-11-30 23:00 .. 2026-12-01 00:00
            rows = [_req(base), _req(base + 60), _req(base + 3600.0)]
        cfg = tmp_path / f"{period}.yaml"
        cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
        lines += [json.dumps(r) for r in rows]
        loaded = load_config(cfg)
        from suanli.router.simulate.cli import decision_lines
        from suanli.router.simulate.engine import replay

        result = replay(loaded, parse_trace(lines, loaded), "greedy")
        out = decision_lines(result)
        assert check_decisions(loaded, lines, out).violations == []
        assert [json.loads(d)["cash_yuan"] for d in out] == pytest.approx([0.0, LIST, 0.0]), period


@pytest.mark.parametrize("policy", POLICIES)
def test_daily_cap_limits_a_credit_per_local_day(tmp_path: Path, policy: str):
    # a 1-yuan credit paying at most 0.01 yuan a day; each request lists 0.006
    voucher = _voucher(id="credit", kind="credit", amount=1.0, daily_cap=0.01)
    config = {"regions": [_region("a")], "vouchers": [voucher]}
    rows = [_req(22 * 3600.0), _req(23 * 3600.0), _req(23.5 * 3600.0), _req(24 * 3600.0 + 60)]
    decisions, summary = _run(tmp_path, config, rows, policy)
    if policy != "greedy":
        return  # exact by the checker; which requests a planning policy spends it on is its own choice
    assert [d["cash_yuan"] for d in decisions] == pytest.approx([0.0, 0.002, LIST, 0.0])
    assert summary["voucher_spent"]["credit"] == pytest.approx(0.016)


def test_event_price_factor_multiplies_on_top_of_a_band(tmp_path: Path):
    config = {"regions": [_region("a", bands=[{"days": "all", "window": "00:00-12:00", "factor": 2.0}])]}
    rows = [_req(60.0), {"t": 100.0, "event": "price_factor", "region": "a", "factor": 1.5, "until": 200},
            _req(150.0), _req(250.0)]
    decisions, _ = _run(tmp_path, config, rows, "greedy")
    assert [d["cash_yuan"] for d in decisions] == pytest.approx([2 * LIST, 3 * LIST, 2 * LIST])


@pytest.mark.parametrize(("extra", "message"), [
    ({"session": 5}, "session must be a non-empty string"),
    ({"session": ""}, "session must be a non-empty string"),
    ({"cached": 10}, "cached needs a session"),
    ({"session": "s", "cached": 1001}, "exceeds input"),
    ({"session": "s", "cached": -1}, "cached must be a number"),
    ({"session": "s", "cached": "5"}, "cached must be a number"),
])
def test_trace_session_and_cached_are_checked(extra: dict, message: str):
    config = load_config({"regions": [_region("a")]})
    lines = [json.dumps({"trace": "suanli/v1", "start": START}), json.dumps(_req(0.0, **extra))]
    with pytest.raises(TraceError, match=message):
        parse_trace(lines, config)


@pytest.mark.parametrize("policy", POLICIES)
def test_peaks_scenario_replays_exactly(policy: str):
    # the public scenario of bands, cached prefixes, a monthly package and a daily-capped credit
    config = load_config(SCENARIOS / "peaks" / "config.yaml")
    lines = (SCENARIOS / "peaks" / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    from suanli.router.simulate.cli import decision_lines
    from suanli.router.simulate.engine import replay

    result = replay(config, parse_trace(lines, config), policy)
    check = check_decisions(config, lines, decision_lines(result))
    assert check.violations == []
    assert check.deadline_misses == 0
    if result.bound_cash_yuan is not None:
        assert result.bound_cash_yuan <= check.cash_yuan + 1e-6


@pytest.mark.parametrize("policy", ("optimizer", "hindsight"))
def test_a_conversation_opens_where_its_follow_ups_will_hit(tmp_path: Path, policy: str):
    # a is a little cheaper for a first turn but has no cache price; at b the follow-up hits.
    # Greedy takes a and keeps the conversation there (a miss at b would cost more still);
    # the planned policies open it at b for the follow-up's sake.
    a = _region("a")
    b = _region("b", price={"input": 2.1, "output": 8.0, "cached_input": 0.2})
    config = {"regions": [a, b]}
    rows = [_req(0.0, session="s", cached=0), _req(60.0, session="s", cached=900)]
    greedy, _ = _run(tmp_path, config, rows, "greedy")
    assert [d["region"] for d in greedy] == ["a", "a"]
    decisions, _ = _run(tmp_path, config, rows, policy)
    assert [d["region"] for d in decisions] == ["b", "b"]
    first, follow = (1000 * 2.1 + 500 * 8.0) / 1e6, (100 * 2.1 + 900 * 0.2 + 500 * 8.0) / 1e6
    assert [d["cash_yuan"] for d in decisions] == pytest.approx([first, follow])
    assert sum(d["cash_yuan"] for d in decisions) < sum(d["cash_yuan"] for d in greedy)


def test_a_lone_request_is_not_pulled_to_the_cache_region(tmp_path: Path):
    # the same prices without a session: nothing to gain at b
    b = _region("b", price={"input": 2.1, "output": 8.0, "cached_input": 0.2})
    config = {"regions": [_region("a"), b]}
    for policy in ("optimizer", "hindsight"):
        decisions, _ = _run(tmp_path, config, [_req(0.0), _req(60.0)], policy)
        assert [d["region"] for d in decisions] == ["a", "a"]


def test_batch_waits_for_tomorrows_package_rather_than_pay_cash_today(tmp_path: Path):
    # 2000 tokens a day; two 1500-token batch requests at 23:00 may wait a day. The first takes
    # today's package; the second would get 500 tokens of it and pay the rest in cash: it waits
    # for midnight, when the package holds 2000 afresh (booked on tomorrow's, not today's).
    config = {"regions": [_region("a")], "vouchers": [_voucher(period="day")]}
    batch = {"class": "batch", "deadline_s": 86400}
    rows = [_req(23 * 3600.0, **batch), _req(23 * 3600.0 + 1, **batch)]
    decisions, summary = _run(tmp_path, config, rows, "optimizer")
    assert [d["voucher"] for d in decisions] == ["pack", "pack"]
    assert sum(d["cash_yuan"] for d in decisions) == pytest.approx(0.0)
    assert max(d["start"] for d in decisions) >= 24 * 3600.0  # one of them the next day
