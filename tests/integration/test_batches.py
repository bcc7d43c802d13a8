"""/v1/files and /v1/batches through the official openai SDK, on a virtual clock."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, timedelta
from pathlib import Path

import openai
import pytest

from suanli.router.core.clocks import VirtualClock
from tests.harness import running_proxy
from tests.integration.workload_helpers import (
    SHANGHAI,
    TEN_AM,
    batch_file,
    jsonl,
    night_config,
    wait_for,
    without_live_limits,
)

pytestmark = pytest.mark.timeout(60)
NIGHT = TEN_AM.replace(hour=0, minute=30) + timedelta(days=1)  # qingyang's off-peak starts


def _client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def _status(client: openai.OpenAI, batch_id: str, *wanted: str):
    def check():
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in wanted else None

    return check


def test_batch_runs_every_line_once_in_the_cheap_west_night(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)  # manual: the test moves time
    unknown_model = {
        "custom_id": "bad-model",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    }
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        uploaded = client.files.create(
            file=batch_file(tmp_path, 12, extra=[unknown_model]).open("rb"), purpose="batch"
        )
        assert uploaded.purpose == "batch" and uploaded.bytes > 0
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating"
        planned = wait_for(_status(client, batch.id, "in_progress"), what="planning")
        assert planned.in_progress_at is not None
        clock.set(NIGHT - timedelta(minutes=1))  # the rest of the expensive day: nothing may run
        time.sleep(0.3)
        assert client.batches.retrieve(batch.id).request_counts.completed == 0
        clock.set(NIGHT + timedelta(hours=7))
        done = wait_for(_status(client, batch.id, "completed", "failed"), what="the batch to complete")
        assert done.status == "completed"
        assert done.request_counts.total == 13
        assert (done.request_counts.completed, done.request_counts.failed) == (12, 1)
        output = jsonl(client.files.content(done.output_file_id).text)
        errors = jsonl(client.files.content(done.error_file_id).text)
        answered = Counter(item["custom_id"] for item in output + errors)
        assert answered == Counter([f"req-{i}" for i in range(12)] + ["bad-model"])
        assert all(item["response"]["status_code"] == 200 for item in output)
        assert all(item["response"]["body"]["choices"][0]["message"]["content"] for item in output)
        assert errors[0]["response"]["status_code"] == 404
        assert errors[0]["response"]["body"]["error"]["code"] == "model_not_found"
        usage = proxy.call(lambda r: r.ledger.usage())
    # Every line was charged once, in the west, inside the off-peak night.
    assert len(usage) == 12
    assert {row.region for row in usage} == {"qingyang"}
    for row in usage:
        local = row.time.astimezone(SHANGHAI)
        assert local.date() == TEN_AM.date() + timedelta(days=1)
        assert (0, 30) <= (local.hour, local.minute) < (8, 30), local
    assert done.model_extra["suanli"]["by_region"] == {"qingyang": 12}
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        with pytest.raises(openai.BadRequestError, match="completed cannot be cancelled"):
            _client(proxy).batches.cancel(batch.id)


def test_cancelled_batch_answers_every_line_and_runs_none(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)  # manual: the night never comes
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        uploaded = client.files.create(file=batch_file(tmp_path, 5).open("rb"), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(_status(client, batch.id, "in_progress"), what="planning")
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done = wait_for(_status(client, batch.id, "cancelled"), what="the cancel")
        assert done.cancelled_at is not None and done.output_file_id is None
        errors = jsonl(client.files.content(done.error_file_id).text)
        assert sorted(e["custom_id"] for e in errors) == sorted(f"req-{i}" for i in range(5))
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        assert proxy.call(lambda r: r.ledger.usage()) == []
        assert client.batches.cancel(batch.id).status == "cancelled"  # cancelling again changes nothing
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_unknown")


def test_restart_mid_batch_loses_no_line_and_runs_none_twice(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    config = night_config(tmp_path, qingyang_rpm=3)  # 9 lines need three minutes of the night
    night = TEN_AM.replace(hour=0, minute=30) + timedelta(days=1)
    with running_proxy(config, clock=clock) as proxy:
        without_live_limits(proxy)
        client = _client(proxy)
        uploaded = client.files.create(file=batch_file(tmp_path, 9).open("rb"), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(_status(client, batch.id, "in_progress"), what="planning")
        clock.set(night + timedelta(seconds=30))
        first = wait_for(
            lambda: client.batches.retrieve(batch.id).request_counts.completed, what="the first lines"
        )
    assert 0 < first < 9
    with running_proxy(config, clock=clock) as proxy:
        without_live_limits(proxy)
        client = _client(proxy)
        assert client.batches.retrieve(batch.id).status == "in_progress"
        clock.set(night + timedelta(hours=2))
        done = wait_for(_status(client, batch.id, "completed"), what="the resumed batch")
        output = jsonl(client.files.content(done.output_file_id).text)
        usage = proxy.call(lambda r: r.ledger.usage())
    assert Counter(item["custom_id"] for item in output) == Counter(f"req-{i}" for i in range(9))
    assert done.error_file_id is None
    assert len(usage) == 9 and len({row.request_id for row in usage}) == 9
    assert all(row.time >= night.astimezone(UTC) for row in usage)
