"""A request larger than every region's tokens per minute: 413 at once, not a 429 to wait out."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.harness import running_proxy, small_config

MESSAGES = [{"role": "user", "content": "你好"}]


def _limited(tmp_path: Path, tpm: dict[str, int]):
    regions = [r.model_dump() for r in small_config(tmp_path).regions]
    for region in regions:
        if region["id"] in tpm:
            region["limits"] = {"tpm": tpm[region["id"]]}
    return small_config(tmp_path, regions=regions, health={"probes": {"enabled": False}})


def test_a_request_over_every_regions_tpm_is_a_413_the_sdk_does_not_retry(tmp_path: Path):
    config = _limited(tmp_path, {"shanghai": 2_000, "wuhan": 2_000, "qingyang": 2_000})
    with running_proxy(config) as proxy:
        before = proxy.call(lambda r: (r.ledger.balances(), len(r.ledger.usage())))
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=2)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=5_000)
        after = proxy.call(lambda r: (r.ledger.balances(), len(r.ledger.usage())))
    error = caught.value
    assert error.status_code == 413
    assert error.response.headers.get("x-should-retry") == "false"
    assert "Retry-After" not in error.response.headers
    body = error.response.json()["error"]
    assert body["code"] == "request_too_large" and body["param"] == "max_tokens"
    assert body["type"] == "invalid_request_error"
    assert before == after  # nothing held, nothing settled


def test_a_region_large_enough_serves_it_though_dearer(tmp_path: Path):
    config = _limited(tmp_path, {"wuhan": 2_000})  # the cheap region, with a voucher
    with running_proxy(config) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=5_000
        )
    assert reply.headers["X-Suanli-Region"] == "shanghai"
    assert reply.parse().choices[0].message.content
