"""/v1/fine_tuning/jobs through the official openai SDK: placement, forwarding, lifecycle, ledger."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import openai
import pytest

from suanli.router.core.clocks import VirtualClock
from tests.harness import running_proxy
from tests.integration.workload_helpers import SHANGHAI, TEN_AM, night_config, wait_for

pytestmark = pytest.mark.timeout(60)

TRAIN_VOUCHER = {
    "id": "qingyang-train",
    "region": "qingyang",
    "kind": "tokens",
    "amount": 10_000_000,
    "classes": ["training"],
    "valid_from": "2026-01-01T00:00:00+08:00",
    "expires": "2028-01-01T00:00:00+08:00",
}


def _training_file(tmp_path: Path, examples: int, words: int = 20) -> Path:
    path = tmp_path / "train.jsonl"
    line = {
        "messages": [
            {"role": "user", "content": "庆阳的算力枢纽在哪里？" * words},
            {"role": "assistant", "content": "在甘肃东部。" * words},
        ]
    }
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for _ in range(examples)) + "\n")
    return path


def _client(proxy, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, default_headers=headers)


def _finished(client: openai.OpenAI, job_id: str):
    def check():
        job = client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    return check


def test_job_waits_for_the_cheap_west_night_and_is_charged_on_the_ledger(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)  # manual: the test moves time
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        training = client.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert job.status == "queued"
        placed = job.model_extra["suanli"]
        assert placed["region"] == "qingyang"  # the only region that fine-tunes
        local = datetime.fromtimestamp(placed["start_at"], SHANGHAI)
        assert local.date() > TEN_AM.date() and (0, 30) <= (local.hour, local.minute) < (8, 30)
        clock.set(local - timedelta(minutes=1))
        time.sleep(0.2)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"  # not before its start
        clock.set(local + timedelta(minutes=1))
        done = wait_for(_finished(client, job.id), what="the job to finish")
        assert done.status == "succeeded", done.error
        assert done.trained_tokens > 0 and done.fine_tuned_model.startswith("ft:deepseek-flash:qingyang")
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
        assert any("placed the job on region qingyang" in m for m in events)
        assert any("succeeded" in m for m in events)
        usage = proxy.call(lambda r: r.ledger.usage())
        assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]
    (row,) = usage
    assert (row.request_id, row.region, row.work_class, row.voucher_id) == (
        job.id,
        "qingyang",
        "training",
        None,
    )
    assert row.tokens == done.trained_tokens
    # Started off-peak: half of price.train (14 yuan per M tokens), all cash.
    assert row.cost_yuan == pytest.approx(done.trained_tokens * 14.0 * 0.5 / 1e6)
    assert row.cash_yuan == pytest.approx(row.cost_yuan)
    assert done.model_extra["suanli"]["cash_yuan"] == pytest.approx(row.cash_yuan)


def test_training_voucher_pays_for_the_job(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(night_config(tmp_path, extra_vouchers=[TRAIN_VOUCHER]), clock=clock) as proxy:
        client = _client(proxy)
        training = client.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert job.model_extra["suanli"]["voucher"] == "qingyang-train"
        clock.set(datetime.fromtimestamp(job.model_extra["suanli"]["start_at"] + 60, SHANGHAI))
        done = wait_for(_finished(client, job.id), what="the job to finish")
        assert done.status == "succeeded", done.error
        (row,) = proxy.call(lambda r: r.ledger.usage())
        balance = proxy.call(lambda r: r.ledger.balance("qingyang-train"))
    assert (row.voucher_id, row.cash_yuan) == ("qingyang-train", 0.0)
    assert balance == TRAIN_VOUCHER["amount"] - done.trained_tokens


def test_queued_job_is_cancelled_without_reaching_the_region(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(night_config(tmp_path), clock=clock) as proxy:
        client = _client(proxy)
        training = client.files.create(file=_training_file(tmp_path, 2).open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert job.status == "queued"
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
        assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
            client.fine_tuning.jobs.cancel(job.id)
        assert proxy.call(lambda r: r.ledger.usage()) == []
        sims = proxy.call(lambda r: r._fleet.stats("qingyang"))
    assert sims.get("requests", 0) == 0


def test_running_job_cancel_is_forwarded_to_the_region(tmp_path: Path):
    clock = VirtualClock(TEN_AM, speed=0)
    # A real-time sim: the job trains for a few seconds, long enough to cancel it mid-run.
    with running_proxy(night_config(tmp_path), clock=clock, sim_latency_scale=1.0) as proxy:
        client = _client(proxy, **{"X-Suanli-Deadline-S": "600"})  # no time to wait for the night
        training = client.files.create(
            file=_training_file(tmp_path, 40, words=30).open("rb"), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(
            model="deepseek-flash", training_file=training.id, hyperparameters={"n_epochs": 3}
        )
        running = wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running",
            what="the job to be forwarded",
        )
        assert running
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
        base = proxy.call(lambda r: r.base_url("qingyang"))
        upstream = json.load(urllib.request.urlopen(f"{base}/fine_tuning/jobs"))["data"]
        assert [j["status"] for j in upstream] == ["cancelled"]
        assert proxy.call(lambda r: r.ledger.usage()) == []


def test_bad_jobs_are_refused_before_anything_is_placed(tmp_path: Path):
    with running_proxy(night_config(tmp_path), clock=VirtualClock(TEN_AM)) as proxy:
        client = _client(proxy)
        training = client.files.create(file=_training_file(tmp_path, 1).open("rb"), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError, match="fine_tuning capability") as caught:
            client.fine_tuning.jobs.create(model="text-embedding-v4", training_file=training.id)
        assert caught.value.body["param"] == "model"
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.create(model="deepseek-flash", training_file="file-missing")
        with pytest.raises(openai.BadRequestError, match="n_epochs"):
            client.fine_tuning.jobs.create(
                model="deepseek-flash", training_file=training.id, hyperparameters={"n_epochs": 0}
            )
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-missing")
        assert list(client.fine_tuning.jobs.list()) == []
