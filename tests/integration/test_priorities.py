"""Key priorities: when supply shrinks, sheddable work is refused first and critical work last.

Driven over HTTP with the openai SDK: keys made with the admin API, an outage a sim's faults
cause (health ejects the region), a voucher cut, a reload that removes a region.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from suanli.config import load_config
from tests.harness import running_proxy, small_config
from tests.integration.test_keys import MASTER, MESSAGES, admin, client, new_key

NO_PROBES = {"probes": {"enabled": False}}


def _shed(key_client: openai.OpenAI, model: str = "deepseek-flash") -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        key_client.chat.completions.create(model=model, messages=MESSAGES)
    return caught.value


def test_priority_is_kept_on_the_key_and_listed(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        assert new_key(proxy, name="batch-jobs", priority="sheddable")["priority"] == "sheddable"
        assert new_key(proxy, name="default")["priority"] == "normal"
        assert new_key(proxy, name="payments", priority="critical")["priority"] == "critical"
        status, listing = admin(proxy, "GET", "/admin/keys")
        assert status == 200
        assert {k["name"]: k["priority"] for k in listing["data"]} == {
            "batch-jobs": "sheddable", "default": "normal", "payments": "critical"}
        status, answer = admin(proxy, "POST", "/admin/keys", {"name": "x", "priority": "urgent"})
        assert status == 400 and answer["error"]["param"] == "priority"


def test_without_a_shortage_priorities_change_nothing(tmp_path: Path):
    with running_proxy(small_config(tmp_path, health=NO_PROBES), master_key=MASTER) as proxy:
        sheddable = client(proxy, new_key(proxy, priority="sheddable")["key"])
        assert sheddable.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices


def test_an_outage_sheds_sheddable_work_first(tmp_path: Path):
    with running_proxy(small_config(tmp_path, health=NO_PROBES), master_key=MASTER) as proxy:
        sheddable = client(proxy, new_key(proxy, priority="sheddable")["key"])
        normal = client(proxy, new_key(proxy)["key"])
        critical = client(proxy, new_key(proxy, priority="critical")["key"])
        sim = proxy.call(lambda r: r.base_url("wuhan")).removesuffix("/v1")
        httpx.post(f"{sim}/sim/faults", json={"error_rate": 1.0, "error_status": 503}).raise_for_status()
        master = client(proxy, MASTER)
        for _ in range(5):  # health.ejection.consecutive_5xx: wuhan is ejected, an outage
            with pytest.raises(openai.APIStatusError):
                master.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES)

        refused = _shed(sheddable)
        assert refused.status_code == 503
        assert refused.body["code"] == "shed_low_priority" and "wuhan" in refused.body["message"]
        assert int(refused.response.headers["retry-after"]) >= 1
        batch = _shed(sheddable.with_options(default_headers={"X-Suanli-Class": "batch"}))
        assert batch.status_code == 503 and batch.body["code"] == "shed_low_priority"
        for key_client in (normal, critical):  # the other regions still serve them
            reply = key_client.chat.completions.with_raw_response.create(model="deepseek-flash",
                                                                     messages=MESSAGES)
            assert reply.headers["x-suanli-region"] != "wuhan"


def test_a_cut_or_a_reload_that_removes_capacity_sheds_sheddable_work(tmp_path: Path):
    path = tmp_path / "suanli.yaml"
    data = json.loads(small_config(tmp_path, health=NO_PROBES).model_dump_json(exclude_none=True))
    path.write_text(yaml.safe_dump(data))
    source = lambda: load_config(path)  # noqa: E731
    with running_proxy(source(), master_key=MASTER, config_source=source) as proxy:
        sheddable = client(proxy, new_key(proxy, priority="sheddable")["key"])
        status, _ = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                          {"amount": 5000, "reason": "bonus"})
        assert status == 200
        # a top-up takes nothing away
        assert sheddable.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices
        status, _ = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                          {"amount": -5000, "reason": "cut"})
        assert status == 200
        assert _shed(sheddable).body["code"] == "shed_low_priority"

    path2 = tmp_path / "b"
    data2 = json.loads(small_config(path2, health=NO_PROBES).model_dump_json(exclude_none=True))
    path.write_text(yaml.safe_dump(data2))
    with running_proxy(source(), master_key=MASTER, config_source=source) as proxy:
        sheddable = client(proxy, new_key(proxy, priority="sheddable")["key"])
        data2["regions"] = data2["regions"][:2]  # qingyang goes
        path.write_text(yaml.safe_dump(data2))
        status, changes = admin(proxy, "POST", "/admin/reload")
        assert status == 200 and changes["regions_removed"] == ["qingyang"]
        assert _shed(sheddable).body["code"] == "shed_low_priority"


def test_while_short_critical_work_keeps_the_last_share_of_a_region(tmp_path: Path):
    # One region of 5 requests a minute; a voucher cut makes supply short.
    region = {"id": "wuhan", "zone": "east", "provider": "sim", "rtt_ms": {"east": 10, "west": 30},
              "ttft_ms": 20, "capabilities": ["chat"], "limits": {"rpm": 5},
              "models": [{"name": "deepseek-flash", "price": {"input": 1.0, "output": 4.0}}]}
    voucher = {"id": "wuhan-tokens", "region": "wuhan", "kind": "tokens", "amount": 100000}
    config = small_config(tmp_path, regions=[region], vouchers=[voucher], health=NO_PROBES)
    with running_proxy(config, master_key=MASTER) as proxy:
        normal = client(proxy, new_key(proxy)["key"])
        critical = client(proxy, new_key(proxy, priority="critical")["key"])
        status, _ = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                          {"amount": -10, "reason": "cut"})
        assert status == 200
        assert critical.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices  # 1 of 5
        for _ in range(3):  # normal work fills the region to 4/5 = 1 - reserve_share
            assert normal.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices
        with pytest.raises(openai.RateLimitError) as caught:
            normal.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert caught.value.response.headers.get("retry-after")
        assert critical.chat.completions.create(model="deepseek-flash", messages=MESSAGES).choices  # 5 of 5
        with pytest.raises(openai.RateLimitError):
            critical.chat.completions.create(model="deepseek-flash", messages=MESSAGES)


def test_a_sheddable_keys_batch_lines_wait_for_the_shortage_to_end(tmp_path: Path):
    from tests.integration.workload_helpers import batch_file, wait_for

    with running_proxy(small_config(tmp_path, health=NO_PROBES), master_key=MASTER) as proxy:
        proxy.call(lambda r: setattr(r.shedding, "hold_s", 2.0))  # a short shortage, for the test's sake
        sheddable = client(proxy, new_key(proxy, priority="sheddable")["key"])
        status, _ = admin(proxy, "POST", "/admin/vouchers/wuhan-tokens/adjust",
                          {"amount": -10, "reason": "cut"})
        assert status == 200
        until_s = proxy.call(lambda r: r.shedding.info())["until_s"]
        uploaded = sheddable.files.create(file=batch_file(tmp_path, 3).open("rb"), purpose="batch")
        batch = sheddable.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")

        def finished():
            found = sheddable.batches.retrieve(batch.id)
            return found if found.status in ("completed", "failed") else None

        done = wait_for(finished, what="the batch to finish")
        assert (done.status, done.request_counts.completed, done.request_counts.failed) == ("completed", 3, 0)
        rows = proxy.call(lambda r: r.ledger.usage())
    lines = [row for row in rows if row.work_class == "batch"]
    assert len(lines) == 3
    assert all(row.time.timestamp() >= until_s for row in lines)  # none ran while supply was short
