"""Batches and fine-tuning jobs across restarts, crashes, bad inputs and the end of the window."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import orjson
import pytest

from suanli.router.core.clocks import VirtualClock
from suanli.router.http.workloads import WORKLOADS
from suanli.router.ledger.sqlite.ledger import HoldRequest, Settlement
from tests.harness import running_proxy
from tests.integration.workload_helpers import TEN_AM, batch_file, jsonl, night_config, wait_for

pytestmark = pytest.mark.timeout(60)
NIGHT = TEN_AM.replace(hour=0, minute=30) + timedelta(days=1)


def _client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def _batch(client: openai.OpenAI, path: Path, window: str = "24h"):
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
    )


def _until(client: openai.OpenAI, batch_id: str, *statuses: str):
    return wait_for(
        lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b, what=f"status {statuses}"
    )


def test_a_line_charged_before_a_crash_is_not_run_again(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    config = night_config(tmp_path)
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        batch = _batch(client, batch_file(tmp_path, 4))
        _until(client, batch.id, "in_progress")

        def crash_after_settle(router) -> None:
            # What a kill -9 between the ledger's settle and the line's "done" leaves behind.
            db = _workload_db(proxy)
            db.execute(
                "UPDATE wl_batch_lines SET state = 'running' WHERE batch_id = ? AND line_no = 0", (batch.id,)
            )
            hold = router.ledger.reserve(
                HoldRequest(
                    request_id=f"{batch.id}-0",
                    region="qingyang",
                    model="deepseek-flash",
                    work_class="batch",
                    origin="east",
                    voucher_id=None,
                    voucher_units=0.0,
                )
            )
            router.ledger.settle(
                hold.id,
                Settlement(
                    prompt_tokens=10,
                    completion_tokens=8,
                    tokens=18,
                    cost_yuan=0.0001,
                    cash_yuan=0.0001,
                    voucher_units=0.0,
                    voucher_yuan=0.0,
                    latency_ms=1.0,
                    ttft_ms=None,
                    attempts=1,
                    status=200,
                ),
            )

        proxy.call(crash_after_settle)
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        clock.set(NIGHT + timedelta(hours=1))
        done = _until(client, batch.id, "completed")
        usage = proxy.call(lambda r: r.ledger.usage())
        output = jsonl(client.files.content(done.output_file_id).text)
        errors = jsonl(client.files.content(done.error_file_id).text)
    assert Counter(u.request_id for u in usage) == Counter(f"{batch.id}-{i}" for i in range(4))
    assert sorted(o["custom_id"] for o in output) == ["req-1", "req-2", "req-3"]
    assert [(e["custom_id"], e["response"]["body"]["error"]["code"]) for e in errors] == [
        ("req-0", "response_lost")
    ]


def _workload_db(proxy):
    return proxy._runner.app[WORKLOADS].parts()[0]


def test_window_closing_first_expires_the_rest(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        batch = _batch(client, batch_file(tmp_path, 3))
        _until(client, batch.id, "in_progress")
        clock.advance(25 * 3600)  # the process slept through the whole window
        done = _until(client, batch.id, "expired")
        errors = jsonl(client.files.content(done.error_file_id).text)
        assert done.expired_at is not None and done.output_file_id is None
        assert {e["error"]["code"] for e in errors} == {"batch_expired"} and len(errors) == 3
        assert proxy.call(lambda r: r.ledger.usage()) == []


def test_lines_for_another_endpoint_fail_the_batch(tmp_path: Path):
    with running_proxy(night_config(tmp_path), clock=VirtualClock(TEN_AM, speed=0)) as proxy:
        client = _client(proxy)
        path = tmp_path / "mixed.jsonl"
        lines = [
            {
                "custom_id": "a",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-v4", "input": "hi"},
            }
        ]
        path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
        failed = _until(client, _batch(client, path).id, "failed")
        assert failed.errors.data[0].code == "invalid_url" and failed.errors.data[0].line == 1
        listed = [b.id for b in client.batches.list()]
        assert listed == [failed.id]


def test_queued_fine_tuning_job_survives_a_restart(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    config = night_config(tmp_path)
    train = tmp_path / "train.jsonl"
    train.write_text(
        '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}]}\n'
    )
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        uploaded = client.files.create(file=train.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="deepseek-flash", training_file=uploaded.id)
        assert job.status == "queued"
    with running_proxy(config, clock=clock) as proxy:
        client = _client(proxy)
        clock.set(NIGHT + timedelta(hours=1))
        done = wait_for(
            lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j,
            what="the resumed job",
        )
        usage = proxy.call(lambda r: r.ledger.usage())
    assert [u.request_id for u in usage] == [job.id] and done.trained_tokens == usage[0].tokens


def test_a_throttled_line_waits_at_its_planned_region(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        batch = _batch(client, batch_file(tmp_path, 2))
        _until(client, batch.id, "in_progress")
        proxy.call(lambda r: r._fleet.set_faults("qingyang", error_rate=1.0, error_status=429))
        clock.set(NIGHT + timedelta(minutes=5))
        wait_for(
            lambda: proxy.call(lambda r: r._fleet.stats("qingyang")).get("status_429", 0) >= 2,
            what="the throttled attempts",
        )
        assert client.batches.retrieve(batch.id).request_counts.completed == 0  # waiting, not moved east
        proxy.call(lambda r: r._fleet.reset_faults("qingyang"))
        time.sleep(1.2)  # the Router's own 429 cool-down for the region runs on real time
        clock.advance(60)
        done = _until(client, batch.id, "completed")
        usage = proxy.call(lambda r: r.ledger.usage())
    assert done.request_counts.completed == 2
    assert {u.region for u in usage} == {"qingyang"}


def test_a_job_the_region_already_has_is_adopted_not_created_twice(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    train = tmp_path / "train.jsonl"
    train.write_text(
        '{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}]}\n'
    )
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        uploaded = client.files.create(file=train.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="deepseek-flash", training_file=uploaded.id)
        # What a crash right after the region created the job (before suanli kept its id) leaves there.
        region = openai.OpenAI(
            base_url=proxy.call(lambda r: r.base_url("qingyang")), api_key="x", max_retries=0
        )
        region_file = region.files.create(file=train.open("rb"), purpose="fine-tune")
        region.fine_tuning.jobs.create(
            model="deepseek-flash", training_file=region_file.id, metadata={"suanli_job": job.id}
        )
        clock.set(datetime.fromtimestamp(job.model_extra["suanli"]["start_at"] + 60, UTC))
        done = wait_for(
            lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j,
            what="the adopted job",
        )
        assert len(list(region.fine_tuning.jobs.list())) == 1
        assert any(
            "Found at region qingyang" in e.message for e in client.fine_tuning.jobs.list_events(job.id)
        )
        usage = proxy.call(lambda r: r.ledger.usage())
    assert [u.request_id for u in usage] == [job.id] and usage[0].tokens == done.trained_tokens
