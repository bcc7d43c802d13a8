"""Upstream errors reach the client typed as OpenAI types them, and never carry the upstream's key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ProxyThread, running_proxy, small_config
from tests.integration.test_faults import _config, _faults, _region, _stats

CANARY = "sk-echoed-canary-5e1f0c9a7b3d2468"
MESSAGES = [{"role": "user", "content": "你好"}]


def _post(proxy: ProxyThread, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=30)


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": 8, **extra}


def _hostile_config(tmp_path: Path):
    regions = [r.model_dump() for r in small_config(tmp_path).regions]
    for region in regions:
        region["api_key"] = CANARY
        region["sim"] = {"echo_key": True, "ms_per_token": 0}
    return small_config(tmp_path, regions=regions, health={"probes": {"enabled": False}})


def test_an_upstream_echoing_its_key_in_code_param_and_stream_errors_leaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with running_proxy(_hostile_config(tmp_path), sim_latency_scale=1.0) as proxy:
        for status in (400, 404, 422, 401, 503):
            _faults(proxy, "shanghai", error_rate=1.0, error_status=status, echo_key=True)
            answer = _post(proxy, _chat("shanghai/deepseek-flash"))
            assert answer.status_code >= 400
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] in {"invalid_request_error", "server_error"}
            seen.append(answer.text + str(answer.headers))
        # Paced, so the first chunk arrives (and is relayed) before the error event.
        _faults(proxy, "wuhan", ms_per_token=50, echo_key=True)
        streamed = _post(proxy, _chat("wuhan/deepseek-flash", stream=True))
        assert streamed.status_code == 200
        events = [e for e in streamed.text.split("\n\n") if e.startswith("data: {")]
        assert '"error"' in events[-1] and "mid-stream" in events[-1]
        seen.append(streamed.text)
        whole = _post(proxy, _chat("qingyang/deepseek-flash"))
        seen.append(whole.text)
    seen += [record.getMessage() for record in caplog.records]
    for text in seen:
        assert CANARY not in text and CANARY[-8:] not in text


@pytest.mark.parametrize(
    ("status", "expected", "kind", "code", "param"),
    [
        (404, 404, "invalid_request_error", "model_not_found", "model"),
        (400, 400, "invalid_request_error", None, None),
        (422, 400, "invalid_request_error", None, None),
    ],
)
def test_a_relayed_client_error_is_typed_as_openai_types_it(
    tmp_path: Path, status: int, expected: int, kind: str, code: str | None, param: str | None
):
    config = _config(tmp_path, [_region("only", 1.0)])
    with running_proxy(config) as proxy:
        _faults(proxy, "only", error_rate=1.0, error_status=status)
        answer = _post(proxy, _chat("deepseek-flash"))
        assert answer.status_code == expected
        error = answer.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (kind, code, param)
        assert proxy.call(lambda r: (r.ledger.pending_holds(), len(r.ledger.usage()))) == (0, 0)


def test_a_region_without_the_model_passes_the_request_on(tmp_path: Path):
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)])
    with running_proxy(config) as proxy:
        _faults(proxy, "cheap", error_rate=1.0, error_status=404)
        served = _post(proxy, _chat("deepseek-flash"))
        assert served.status_code == 200
        assert (served.headers["x-suanli-region"], served.headers["x-suanli-attempts"]) == ("dear", "2")


def test_an_upstream_401_is_our_key_a_502_server_error_after_trying_the_others(tmp_path: Path):
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)])
    with running_proxy(config) as proxy:
        _faults(proxy, "cheap", error_rate=1.0, error_status=401)
        served = _post(proxy, _chat("deepseek-flash"))
        assert served.status_code == 200 and served.headers["x-suanli-region"] == "dear"
        _faults(proxy, "dear", error_rate=1.0, error_status=403)
        answer = _post(proxy, _chat("deepseek-flash"))
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "upstream_auth_failed"


def test_a_stream_only_fault_keeps_whole_answers_on_the_region(tmp_path: Path):
    health = {"ejection": {"consecutive_gateway_failures": 2, "base_ejection_s": 60}}
    config = _config(tmp_path, [_region("cheap", 1.0), _region("dear", 2.0)], health=health)
    with running_proxy(config) as proxy:
        _faults(proxy, "cheap", reset_after_chunks=3)
        for _ in range(2):
            broken = _post(proxy, _chat("deepseek-flash", stream=True))
            assert broken.headers["x-suanli-region"] == "cheap" and "broke" in broken.text
        stream = _post(proxy, _chat("deepseek-flash", stream=True))
        assert stream.headers["x-suanli-region"] == "dear" and "[DONE]" in stream.text
        for _ in range(3):
            whole = _post(proxy, _chat("deepseek-flash"))
            assert whole.status_code == 200 and whole.headers["x-suanli-region"] == "cheap"
        stats = _stats(proxy)["cheap"]
        assert stats["state"] == "ok" and stats["streams_avoided"] is True
