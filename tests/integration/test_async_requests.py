"""``X-Suanli-Async: true``: batch work answered 202, run at the cheapest start before its deadline,
fetched at ``GET /v1/requests/{id}`` by its key only; bad input still a 400 at once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import openai
import pytest

from suanli.config import load_config
from tests.harness import running_proxy, small_config
from tests.integration.test_reconcile import call as _call

MASTER = "sk-master-async-test"
MESSAGES = [{"role": "user", "content": "把这段日志总结一下"}]


def call(url: str, method: str = "GET", body=None, key: str | None = MASTER, headers=None):
    if headers is None:
        return _call(url, method, body, key=key)
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_async_batch_request_is_answered_later_at_its_request_id(tmp_path: Path):
    with running_proxy(small_config(tmp_path, vouchers=[]), master_key=MASTER) as proxy:
        root = f"http://127.0.0.1:{proxy.port}"
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=12,
            extra_body={"suanli": {"deadline_s": 3600}}, extra_headers={"X-Suanli-Async": "true"},
        )
        assert raw.status_code == 202
        queued = raw.http_response.json()
        request_id = queued["id"]
        assert raw.headers["location"] == f"/v1/requests/{request_id}"
        assert queued["status"] in ("queued", "in_progress", "completed")
        deadline = time.monotonic() + 10
        while (doc := call(f"{root}/v1/requests/{request_id}")[1])["status"] != "completed":
            assert doc["status"] in ("queued", "in_progress"), doc
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert doc["response"]["choices"][0]["message"]["content"]
        assert doc["response"]["usage"]["cost_yuan"] == doc["cost_yuan"]  # the settled record, merged
        assert doc["class"] == "batch"
        # Another key sees nothing.
        status, key = call(f"{root}/admin/keys", "POST", {"name": "other"})
        assert call(f"{root}/v1/requests/{request_id}", key=key["key"])[0] == 404


def test_async_needs_batch_work_and_no_stream(tmp_path: Path):
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
        body = {"model": "deepseek-flash", "messages": MESSAGES}
        status, error = call(url, "POST", body, headers={"X-Suanli-Async": "true"})
        assert status == 400 and error["error"]["param"] == "X-Suanli-Async"
        status, error = call(url, "POST", {**body, "stream": True, "suanli": {"deadline_s": 60}},
                             headers={"X-Suanli-Async": "true"})
        assert status == 400 and error["error"]["param"] == "stream"
        bad = {**body, "suanli": {"deadline_s": -5}}
        status, error = call(url, "POST", bad, headers={"X-Suanli-Async": "1"})
        assert status == 400 and error["error"]["param"] == "suanli.deadline_s"
        assert proxy.call(lambda r: r.ledger.pending_holds()) == 0


def test_async_request_waits_for_the_cheap_window(tmp_path: Path):
    tz = ZoneInfo("Asia/Shanghai")
    opens = (datetime.now(tz) + timedelta(minutes=3)).replace(second=0, microsecond=0)
    window = f"{opens:%H:%M}-{opens + timedelta(minutes=60):%H:%M}"
    data = small_config(tmp_path, vouchers=[]).model_dump(mode="json", exclude_none=True, by_alias=True)
    for region in data["regions"]:
        for offer in region["models"]:
            offer["off_peak"] = {"window": window, "discount": 0.8}
    with running_proxy(load_config(data), master_key=MASTER) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
        body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": 8,
                "suanli": {"deadline_s": 7200}}
        status, queued = call(url, "POST", body, headers={"X-Suanli-Async": "true"})
        assert status == 202, queued
        not_before = datetime.fromisoformat(queued["not_before"])
        if opens.hour == 0 and opens.minute < 5:
            pytest.skip("the window crosses midnight right now")
        assert not_before >= opens - timedelta(seconds=1), (queued, window)
        assert queued["status"] == "queued"
        assert proxy.call(lambda r: r.ledger.pending_holds()) == 0  # nothing held while it waits
