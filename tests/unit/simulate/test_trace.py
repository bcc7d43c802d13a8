"""Trace parsing is strict: every missing or unknown field is an error naming its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suanli.config import load_config
from suanli.router.simulate.trace import TraceError, load_trace, parse_trace
from tests.unit.optimizer.tiny import make_config, region

CONFIG = make_config([region("a", "east")])
HEADER = json.dumps({"trace": "suanli/v1", "start": "2026-12-01T00:00:00+08:00"})
REQUEST = {"t": 1.5, "model": "m", "class": "interactive", "origin": "east", "input": 800, "output": 300}
ROOT = Path(__file__).resolve().parents[3]


def _parse(*requests: dict, header: str = HEADER) -> object:
    return parse_trace([header, *(json.dumps(r) for r in requests)], CONFIG)


def _error(*requests: dict, header: str = HEADER) -> str:
    with pytest.raises(TraceError) as exc:
        _parse(*requests, header=header)
    return str(exc.value)


def test_a_well_formed_trace_parses_every_field():
    batch = {**REQUEST, "t": 9, "class": "batch", "deadline_s": 600, "session": "s-1", "cached": 10}
    trace = _parse(REQUEST, batch)
    first, second = trace.jobs
    assert (first.input_tokens, first.output_tokens, first.origin) == (800.0, 300.0, "east")
    assert second.work_class == "batch" and trace.deadlines_s == (0.0, 600.0)


def test_guessed_field_names_are_refused_with_the_line_number():
    guessed = {k: v for k, v in REQUEST.items() if k != "input"} | {"input_tokens": 800}
    message = _error(REQUEST, guessed)
    assert message.startswith("line 3:")
    assert "missing input" in message and "unknown input_tokens" in message


@pytest.mark.parametrize("field", ["t", "model", "class", "origin", "input", "output"])
def test_each_required_field_missing_is_an_error(field: str):
    request = {k: v for k, v in REQUEST.items() if k != field}
    assert f"missing {field}" in _error(request)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"class": "urgent"}, "class must be one of"),
        ({"origin": "north"}, "origin must be east or west"),
        ({"input": -5}, "input must be a number >= 0"),
        ({"output": "300"}, "output must be a number >= 0"),
        ({"t": True}, "t must be a number"),
        ({"model": ""}, "model must be a non-empty string"),
    ],
)
def test_bad_values_name_the_line(change: dict, words: str):
    message = _error({**REQUEST, **change})
    assert message.startswith("line 2:") and words in message


def test_the_header_is_checked_too():
    other = json.dumps({"trace": "suanli/v2", "start": "2026-12-01T00:00:00"})
    assert "line 1: bad header" in _error(header=other)
    assert "unknown tz" in _error(header=json.dumps({"trace": "suanli/v1", "start": "2026-12-01", "tz": "x"}))
    assert "missing start" in _error(header=json.dumps({"trace": "suanli/v1"}))


def test_blank_lines_count_in_the_line_numbers():
    lines = [HEADER, "", json.dumps(REQUEST), "", json.dumps({**REQUEST, "inputs": 1})]
    with pytest.raises(TraceError, match="^line 5:"):
        parse_trace(lines, CONFIG)


def test_event_lines_are_checked_strictly_and_kept_apart_from_requests():
    assert "unknown until_s" in _error({"t": 5, "event": "region_down", "region": "a", "until_s": 9})
    assert "unknown event 'outage'" in _error({"t": 5, "event": "outage"})
    assert "missing until" in _error({"t": 5, "event": "region_down", "region": CONFIG.regions[0].id})
    region = CONFIG.regions[0].id
    trace = _parse(REQUEST, {"t": 5, "event": "region_down", "region": region, "until": 9})
    assert len(trace.jobs) == 1 and [(e.kind, e.region, e.rel_s) for e in trace.events] == [
        ("region_down", region, 5.0)
    ]


def test_a_line_that_is_not_an_object_is_an_error():
    with pytest.raises(TraceError, match="^line 2: a line must be a JSON object"):
        parse_trace([HEADER, "[1, 2]"], CONFIG)


@pytest.mark.parametrize("name", ["cityday", "expiry", "offpeak", "scarcity", "tokenizer"])
def test_the_public_scenarios_in_the_repository_parse(name: str):
    directory = ROOT / "benchmarks" / "scenarios" / name
    assert load_trace(directory / "trace.jsonl", load_config(directory / "config.yaml")).jobs


def test_the_sample_trace_in_the_repository_parses():
    config = load_config(ROOT / "examples" / "sample-day" / "config.yaml")
    trace = load_trace(ROOT / "examples" / "sample-day" / "trace.jsonl", config)
    assert {job.work_class for job in trace.jobs} == {"interactive", "batch", "training"}
