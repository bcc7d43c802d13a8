"""A batch on a PostgreSQL ledger: planned, cut short by a restart, resumed, every line charged once."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import openai
import pytest

from suanli.router.core.clocks import VirtualClock
from tests.harness import running_proxy
from tests.integration.workload_helpers import (
    TEN_AM,
    batch_file,
    jsonl,
    night_config,
    wait_for,
    without_live_limits,
)
from tests.pg import drop_schema_sync, fresh_pg_url, requires_pg

pytestmark = [pytest.mark.timeout(90), requires_pg]
NIGHT = TEN_AM.replace(hour=0, minute=30) + timedelta(days=1)


def test_batch_resumes_on_a_postgresql_ledger(tmp_path: Path):
    url = fresh_pg_url()
    base = night_config(tmp_path, qingyang_rpm=3)
    config = base.model_copy(
        update={
            "ledger": base.ledger.model_copy(update={"url": url}),
            "data_dir": str(tmp_path / "data"),
        }
    )
    clock = VirtualClock(TEN_AM, speed=0)
    try:
        with running_proxy(config, clock=clock) as proxy:
            without_live_limits(proxy)
            client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
            uploaded = client.files.create(file=batch_file(tmp_path, 6).open("rb"), purpose="batch")
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress", what="planning")
            clock.set(NIGHT + timedelta(seconds=30))
            first = wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed, what="lines")
        assert 0 < first < 6
        with running_proxy(config, clock=clock) as proxy:
            without_live_limits(proxy)
            client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
            clock.set(NIGHT + timedelta(hours=1))
            done = wait_for(
                lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b, what="the batch"
            )
            output = jsonl(client.files.content(done.output_file_id).text)
            errors = jsonl(client.files.content(done.error_file_id).text) if done.error_file_id else []
            usage = proxy.router.ledger.usage()  # a blocking read, from this (non-loop) thread
        assert errors == []
        assert Counter(o["custom_id"] for o in output) == Counter(f"req-{i}" for i in range(6))
        assert Counter(u.request_id for u in usage) == Counter(f"{batch.id}-{i}" for i in range(6))
        assert (tmp_path / "data" / "workloads.db").exists()
    finally:
        drop_schema_sync(url)
