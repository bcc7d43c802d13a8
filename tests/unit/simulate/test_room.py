"""Batch work the optimizer booked in a minute gives way to an interactive request that needs the room.

An interactive request cannot wait and a batch job can: the optimizer starts a deferred
batch job at the last second of its minute, and an interactive request that finds every
eligible region full takes the place of batch jobs there that have not started yet, which
are placed again within their deadlines (``router.simulate.room``).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import yaml

from suanli.config import load_config
from suanli.router.simulate.cli import decision_lines
from suanli.router.simulate.engine import replay
from suanli.router.simulate.trace import load_trace
from tests.unit.optimizer.checker import check_decisions

START = "2026-12-07T10:00:00+08:00"


def datetime_s(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _config() -> dict:
    model = {"name": "m", "price": {"input": 2.0, "output": 8.0}}
    region = {"id": "a", "zone": "east", "provider": "sim", "rtt_ms": {"east": 10}, "ttft_ms": 100,
              "capabilities": ["chat", "batch"], "models": [model], "limits": {"tpm": 5000, "rpm": 100}}
    # batch work is free at a: the optimizer starts it there at once
    voucher = {"id": "a-batch", "region": "a", "kind": "tokens", "amount": 1_000_000, "classes": ["batch"]}
    return {"regions": [region], "vouchers": [voucher]}


def _replay(
    tmp_path: Path, rows: list[dict], policy: str, config: dict | None = None
) -> tuple[list[dict], int]:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config or _config()), encoding="utf-8")
    lines = [json.dumps({"trace": "suanli/v1", "start": START})] + [json.dumps(r) for r in rows]
    (tmp_path / "trace.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(tmp_path / "config.yaml")
    result = replay(config, load_trace(tmp_path / "trace.jsonl", config), policy)
    out = decision_lines(result)
    check = check_decisions(config, lines, out)
    assert check.violations == []
    assert check.deadline_misses == 0
    return [json.loads(line) for line in out], result.rejected


def test_an_interactive_request_takes_the_room_of_batch_work_not_started(tmp_path: Path):
    batch = {"t": 5.0, "model": "m", "class": "batch", "origin": "east", "input": 2000, "output": 1000,
             "deadline_s": 3600}
    chat = [{"t": t, "model": "m", "class": "interactive", "origin": "east", "input": 1000, "output": 500}
            for t in (20.0, 30.0)]
    # 3,000 batch tokens and two requests of 1,500 do not fit a's 5,000 tpm in one minute
    greedy, greedy_rejected = _replay(tmp_path, [batch, *chat], "greedy")
    assert greedy_rejected == 1
    decisions, rejected = _replay(tmp_path, [batch, *chat], "optimizer")
    assert rejected == 0
    by = {d["i"]: d for d in decisions}
    assert [by[i]["region"] for i in (1, 2)] == ["a", "a"]
    assert 60.0 <= by[0]["start"] <= 5.0 + 3600  # moved to a later minute, within its deadline
    assert by[0]["voucher"] == "a-batch"  # and still paid by the voucher it meant to use


def test_batch_work_that_nothing_displaces_pays_as_it_would_at_once(tmp_path: Path):
    batch = {"t": 5.0, "model": "m", "class": "batch", "origin": "east", "input": 2000, "output": 1000,
             "deadline_s": 30}
    decisions, rejected = _replay(tmp_path, [batch], "optimizer")
    assert rejected == 0
    (only,) = decisions
    assert only["region"] == "a" and only["voucher"] == "a-batch" and only["cash_yuan"] == 0.0
    assert 5.0 <= only["start"] <= 35.0  # starts late in its minute, never past its deadline


def test_a_flexible_request_leaves_the_room_another_kind_has_nowhere_else(tmp_path: Path):
    # m2 is served only at a; m1 at a and, dearer, at b. Each minute three m1 requests come
    # first and two m2 requests last: 7,500 tokens a minute where a takes 6,000.
    m1 = {"name": "m1", "price": {"input": 2.0, "output": 8.0}}
    m2 = {"name": "m2", "price": {"input": 2.0, "output": 8.0}}
    dear = {"name": "m1", "price": {"input": 3.0, "output": 12.0}}
    base = {"zone": "east", "provider": "sim", "rtt_ms": {"east": 10}, "ttft_ms": 100,
            "capabilities": ["chat"]}
    config = {"regions": [{"id": "a", **base, "models": [m1, m2], "limits": {"tpm": 6000, "rpm": 100}},
                          {"id": "b", **base, "models": [dear], "limits": {"tpm": 100000, "rpm": 1000}}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    rows = []
    for minute in range(60):
        at = minute * 60.0
        rows += [{"t": at + s, "model": "m1", "class": "interactive", "origin": "east", "input": 1000,
                  "output": 500} for s in (5.0, 10.0, 15.0)]
        rows += [{"t": at + s, "model": "m2", "class": "interactive", "origin": "east", "input": 1000,
                  "output": 500} for s in (40.0, 50.0)]
    lines = [json.dumps({"trace": "suanli/v1", "start": START})] + [json.dumps(r) for r in rows]
    (tmp_path / "trace.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_config(tmp_path / "config.yaml")
    trace = load_trace(tmp_path / "trace.jsonl", loaded)
    greedy = replay(loaded, trace, "greedy")
    optimizer = replay(loaded, trace, "optimizer")
    assert greedy.rejected == 60  # the second m2 of every minute
    check = check_decisions(loaded, lines, decision_lines(optimizer))
    assert check.violations == []
    # once the plan has seen m2 come (re-plans are five minutes apart), m1 leaves it room
    assert optimizer.rejected <= 10
    late_m2 = [d for d in optimizer.decisions if d.i >= 5 * 15 and rows[d.i]["model"] == "m2"]
    assert all(d.region == "a" for d in late_m2)



def test_a_late_start_at_the_deadline_stays_within_it_in_trace_seconds(tmp_path: Path):
    # Deferred to 10:01 (off-peak from then), the job starts at the last second within its
    # deadline, an epoch time: back in trace seconds 65.002 came out 9e-8 s later, a start
    # past the deadline for the checker (random day 12).
    config = _config()
    config["regions"][0]["models"][0]["off_peak"] = {"window": "10:01-12:00", "discount": 0.5}
    del config["vouchers"]
    batch = {"t": 5.002, "model": "m", "class": "batch", "origin": "east", "input": 2000, "output": 1000,
             "deadline_s": 60}
    decisions, rejected = _replay(tmp_path, [batch], "optimizer", config)
    assert rejected == 0
    (only,) = decisions
    assert 65.0 <= only["start"] <= 5.002 + 60
