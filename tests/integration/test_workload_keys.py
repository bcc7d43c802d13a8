"""Files, batches and fine-tuning jobs under virtual keys: each key sees its own; jobs hold its budget."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from suanli.router.core.clocks import VirtualClock
from tests.backends import read
from tests.harness import running_proxy
from tests.integration.test_keys import MASTER, admin, client, new_key
from tests.integration.workload_helpers import SHANGHAI, TEN_AM, batch_file, jsonl, night_config, wait_for

pytestmark = pytest.mark.timeout(60)


def _training_file(tmp_path: Path, examples: int) -> Path:
    path = tmp_path / f"train-{examples}.jsonl"
    line = {
        "messages": [
            {"role": "user", "content": "庆阳的算力枢纽在哪里？" * 20},
            {"role": "assistant", "content": "在甘肃东部。" * 20},
        ]
    }
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for _ in range(examples)) + "\n")
    return path


def _config(tmp_path: Path, ledger_opts: dict):
    """The night config on the test's ledger backend, workload files kept in ``tmp_path``."""
    return night_config(tmp_path, data_dir=str(tmp_path / "data"), **ledger_opts)


def _status(sdk: openai.OpenAI, batch_id: str, status: str):
    return lambda: (b := sdk.batches.retrieve(batch_id)).status == status and b


def test_a_key_sees_and_touches_only_its_own_files_batches_and_jobs(tmp_path: Path, ledger_opts: dict):
    clock = VirtualClock(TEN_AM, speed=0)  # manual: nothing runs before the night
    with running_proxy(_config(tmp_path, ledger_opts), clock=clock, master_key=MASTER) as proxy:
        a, b = (client(proxy, new_key(proxy, name=n)["key"]) for n in ("a", "b"))
        master = client(proxy, MASTER)
        a_input = a.files.create(file=batch_file(tmp_path, 3).open("rb"), purpose="batch")
        a_train = a.files.create(file=_training_file(tmp_path, 2).open("rb"), purpose="fine-tune")
        batch = a.batches.create(
            input_file_id=a_input.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        job = a.fine_tuning.jobs.create(model="deepseek-flash", training_file=a_train.id)
        b_file = b.files.create(file=batch_file(tmp_path, 2).open("rb"), purpose="batch")

        # B lists nothing of A's and gets the same 404 for A's objects as for unknown ones.
        assert [f.id for f in b.files.list()] == [b_file.id]  # (B's training file comes later)
        assert list(b.batches.list()) == [] and list(b.fine_tuning.jobs.list()) == []
        for call in (
            lambda: b.files.retrieve(a_input.id),
            lambda: b.files.content(a_input.id),
            lambda: b.files.delete(a_train.id),
            lambda: b.batches.retrieve(batch.id),
            lambda: b.batches.cancel(batch.id),
            lambda: b.fine_tuning.jobs.retrieve(job.id),
            lambda: b.fine_tuning.jobs.cancel(job.id),
            lambda: b.fine_tuning.jobs.list_events(job.id),
        ):
            with pytest.raises(openai.NotFoundError) as exc:
                call()
            assert exc.value.code == "not_found"
        # Nor can B batch or train on A's files.
        with pytest.raises(openai.NotFoundError) as exc:
            b.batches.create(
                input_file_id=a_input.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert exc.value.body["param"] == "input_file_id"
        with pytest.raises(openai.NotFoundError) as exc:
            b.fine_tuning.jobs.create(model="deepseek-flash", training_file=a_train.id)
        assert exc.value.body["param"] == "training_file"
        b_train = b.files.create(file=_training_file(tmp_path, 2).open("rb"), purpose="fine-tune")
        with pytest.raises(openai.NotFoundError) as exc:
            b.fine_tuning.jobs.create(
                model="deepseek-flash", training_file=b_train.id, validation_file=a_train.id
            )
        assert exc.value.body["param"] == "validation_file"

        # A sees its own; the master sees everyone's and may act on them.
        assert {f.id for f in a.files.list()} == {a_input.id, a_train.id}
        assert [x.id for x in a.batches.list()] == [batch.id]
        assert [x.id for x in a.fine_tuning.jobs.list()] == [job.id]
        assert {f.id for f in master.files.list()} == {a_input.id, a_train.id, b_file.id, b_train.id}
        assert [x.id for x in master.batches.list()] == [batch.id]
        assert master.fine_tuning.jobs.retrieve(job.id).status == "queued"
        assert a.files.content(a_input.id).text.count("custom_id") == 3

        # A batch's result files belong to its key.
        wait_for(_status(a, batch.id, "in_progress"), what="planning")
        a.batches.cancel(batch.id)
        done = wait_for(_status(a, batch.id, "cancelled"), what="the cancel")
        assert len(jsonl(a.files.content(done.error_file_id).text)) == 3
        with pytest.raises(openai.NotFoundError):
            b.files.content(done.error_file_id)
        assert master.files.retrieve(done.error_file_id).purpose == "batch_output"
        assert master.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        assert a.files.delete(a_train.id).deleted
        assert b.files.retrieve(b_file.id).id == b_file.id  # untouched by all of the above


def _key_state(proxy, key_id: str) -> dict:
    status, shown = admin(proxy, "GET", f"/admin/keys/{key_id}")
    assert status == 200, shown
    return shown


def _estimate(job) -> float:
    """What placement expects the job to cost: price.train (14/M) at the off-peak half."""
    return job.model_extra["suanli"]["estimated_tokens"] * 14.0 * 0.5 / 1e6


def test_job_holds_its_estimate_on_the_key_budget_releases_it_on_cancel(tmp_path: Path, ledger_opts: dict):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(_config(tmp_path, ledger_opts), clock=clock, master_key=MASTER) as proxy:
        master = client(proxy, MASTER)
        probe_file = master.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        probe = master.fine_tuning.jobs.create(model="deepseek-flash", training_file=probe_file.id)
        estimate = _estimate(probe)
        master.fine_tuning.jobs.cancel(probe.id)
        assert estimate > 0

        # Room for one such job, not two.
        made = new_key(proxy, name="trainer", budget_yuan_per_day=estimate * 1.5)
        sdk = client(proxy, made["key"])
        training = sdk.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        first = sdk.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert _estimate(first) == pytest.approx(estimate)
        held = _key_state(proxy, made["id"])
        assert held["held_yuan_today"] == pytest.approx(estimate, rel=1e-6)
        assert held["spent_yuan_today"] == 0

        balances = read(proxy, lambda r: r.ledger.balances())
        retrying = openai.OpenAI(base_url=proxy.base_url, api_key=made["key"], max_retries=3)
        with pytest.raises(openai.RateLimitError) as exc:
            retrying.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert exc.value.code == "budget_exceeded"
        assert exc.value.response.headers["x-should-retry"] == "false"
        assert [j.id for j in sdk.fine_tuning.jobs.list()] == [first.id]  # no job was recorded
        assert read(proxy, lambda r: r.ledger.balances()) == balances
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 1  # the first job's only
        assert _key_state(proxy, made["id"])["held_yuan_today"] == pytest.approx(estimate, rel=1e-6)

        # Cancelling gives the budget back: the same job now fits.
        assert sdk.fine_tuning.jobs.cancel(first.id).status == "cancelled"
        freed = _key_state(proxy, made["id"])
        assert (freed["held_yuan_today"], freed["spent_yuan_today"]) == (0, 0)
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
        assert read(proxy, lambda r: r.ledger.usage()) == []
        second = sdk.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert second.status == "queued"


def test_a_finished_job_settles_its_real_cost_on_the_key(tmp_path: Path, ledger_opts: dict):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(_config(tmp_path, ledger_opts), clock=clock, master_key=MASTER) as proxy:
        made = new_key(proxy, name="trainer", budget_yuan_per_month=10.0)
        sdk = client(proxy, made["key"])
        training = sdk.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        job = sdk.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert _key_state(proxy, made["id"])["held_yuan_today"] == pytest.approx(_estimate(job), rel=1e-6)
        start = datetime.fromtimestamp(job.model_extra["suanli"]["start_at"], SHANGHAI)
        clock.set(start + timedelta(minutes=1))

        def finished():
            found = sdk.fine_tuning.jobs.retrieve(job.id)
            return found if found.status in ("succeeded", "failed", "cancelled") else None

        done = wait_for(finished, what="the job to finish")
        assert done.status == "succeeded", done.error
        (row,) = read(proxy, lambda r: r.ledger.usage())
        assert (row.request_id, row.key_id, row.tokens) == (job.id, made["id"], done.trained_tokens)
        assert row.cost_yuan == pytest.approx(done.trained_tokens * 14.0 * 0.5 / 1e6)
        shown = _key_state(proxy, made["id"])
        assert shown["spent_yuan_this_month"] == pytest.approx(row.cost_yuan, rel=1e-6)
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0


def test_a_queued_job_holds_its_budget_again_after_a_restart(tmp_path: Path, ledger_opts: dict):
    clock = VirtualClock(TEN_AM, speed=0)
    config = _config(tmp_path, ledger_opts)
    with running_proxy(config, clock=clock, master_key=MASTER) as proxy:
        made = new_key(proxy, name="trainer", budget_yuan_per_day=1.0)
        sdk = client(proxy, made["key"])
        training = sdk.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        job = sdk.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
    with running_proxy(config, clock=clock, master_key=MASTER) as proxy:
        # The old process's hold was voided by recovery; the resumed job took a new one.
        assert _key_state(proxy, made["id"])["held_yuan_today"] == pytest.approx(_estimate(job), rel=1e-6)
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 1
        sdk = client(proxy, made["key"])
        assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        assert _key_state(proxy, made["id"])["held_yuan_today"] == 0
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0


def test_a_job_that_fails_at_its_region_releases_its_hold(tmp_path: Path, ledger_opts: dict):
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(_config(tmp_path, ledger_opts), clock=clock, master_key=MASTER) as proxy:
        made = new_key(proxy, name="trainer", budget_yuan_per_day=1.0)
        sdk = client(proxy, made["key"])
        training = sdk.files.create(file=_training_file(tmp_path, 10).open("rb"), purpose="fine-tune")
        job = sdk.fine_tuning.jobs.create(model="deepseek-flash", training_file=training.id)
        assert _key_state(proxy, made["id"])["held_yuan_today"] > 0
        url = proxy.call(lambda r: r._fleet.urls["qingyang"]).removesuffix("/v1")
        httpx.post(f"{url}/sim/faults", json={"error_rate": 1.0, "error_status": 503}).raise_for_status()
        start = datetime.fromtimestamp(job.model_extra["suanli"]["start_at"], SHANGHAI)
        clock.set(start + timedelta(minutes=1))
        failed = wait_for(
            lambda: (j := sdk.fine_tuning.jobs.retrieve(job.id)).status == "failed" and j, what="the failure"
        )
        assert failed.error is not None
        assert read(proxy, lambda r: r.ledger.pending_holds()) == 0
        assert read(proxy, lambda r: r.ledger.usage()) == []
        clock.set(TEN_AM)  # the day the job was accepted, whose budget it held
        shown = _key_state(proxy, made["id"])
        assert (shown["held_yuan_today"], shown["spent_yuan_today"]) == (0, 0)
