"""One big batch line must not freeze the proxy: lines are read, checked and counted off the
event loop, a line over ``max_body_bytes`` is refused alone (413 in the error file), and
/health keeps answering within its deadline the whole time."""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import openai
import pytest

from suanli.router.core.clocks import VirtualClock
from tests.harness import running_proxy
from tests.integration.workload_helpers import TEN_AM, batch_file, jsonl, night_config, wait_for

pytestmark = pytest.mark.timeout(120)

HEALTH_DEADLINE_S = 1.0


def _big_line(custom_id: str, size: int) -> dict:
    words = "西部算力为什么便宜 why is western compute cheap 0123456789 "
    text = (words * (size // len(words.encode()) + 1))[: size // 3]
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "deepseek-flash", "max_tokens": 8,
                     "messages": [{"role": "user", "content": text}]}}


def test_a_big_batch_line_is_refused_alone_and_health_keeps_answering(tmp_path: Path) -> None:
    clock = VirtualClock(TEN_AM, speed=0)
    config = night_config(tmp_path, max_body_bytes=1024 * 1024)
    with running_proxy(config, clock=clock) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=60)
        # a 12 MB one-line request (over the 1 MiB body limit) and a 0.5 MB one (under it)
        extra = [_big_line("huge", 12 * 1024 * 1024), _big_line("big", 512 * 1024)]
        path = batch_file(tmp_path, 4, extra=extra)
        slowest: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            health = proxy.base_url.removesuffix("/v1") + "/health"
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(health, timeout=10) as response:
                        assert response.status == 200
                except OSError:
                    pass
                slowest.append(time.perf_counter() - started)
                time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            uploaded = client.files.create(file=path.open("rb"), purpose="batch")
            batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
            wait_for(lambda: client.batches.retrieve(batch.id).status in ("in_progress", "failed") or None,
                     what="planning", timeout_s=60)
            clock.set(TEN_AM + timedelta(hours=23))
            done = wait_for(lambda: (b := client.batches.retrieve(batch.id)).status in ("completed", "failed")
                            and b or None, what="the batch", timeout_s=60)
        finally:
            stop.set()
            prober.join(15)
        assert done.status == "completed"
        assert (done.request_counts.completed, done.request_counts.failed) == (5, 1)
        errors = jsonl(client.files.content(done.error_file_id).text)
        assert [e["custom_id"] for e in errors] == ["huge"]
        assert errors[0]["response"]["status_code"] == 413
        assert errors[0]["response"]["body"]["error"]["code"] == "request_too_large"
        assert len(slowest) >= 3
        assert max(slowest) < HEALTH_DEADLINE_S, f"/health took {max(slowest):.2f} s"
