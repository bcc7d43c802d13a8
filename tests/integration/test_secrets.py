"""An upstream key set to a canary never shows in an answer, a log line or the database."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.harness import running_proxy, small_config

CANARY = "sk-canary-7f3e9a1b2c4d5e6f"
MESSAGES = [{"role": "user", "content": "你好"}]


def test_canary_upstream_key_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    config = small_config(tmp_path)
    regions = [r.model_dump() for r in config.regions]
    for region in regions:
        region["api_key"] = CANARY  # the sim checks the bearer key, so forwarding is exercised
    regions[2]["sim"] = {"error_rate": 1.0, "error_status": 503}
    config = small_config(tmp_path, regions=regions)
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with running_proxy(config) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="client-key", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=4
        )
        seen += [raw.text, str(dict(raw.headers))]
        stream = client.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=4, stream=True
        )
        seen.append(stream.http_response.read().decode())
        with pytest.raises(openai.APIStatusError) as exc:  # the failing west region, pinned
            client.chat.completions.create(model="qingyang/deepseek-flash", messages=MESSAGES, max_tokens=4)
        seen += [str(exc.value), str(exc.value.body), str(dict(exc.value.response.headers))]
        with pytest.raises(openai.NotFoundError) as exc:
            client.chat.completions.create(model="nope", messages=MESSAGES)
        seen.append(str(exc.value.body))
        seen.append(str(proxy.call(lambda r: r.voucher_report())))
        seen.append(str(proxy.call(lambda r: repr(r.config))))
    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.exc_info) for record in caplog.records if record.exc_info]
    assert raw.headers["x-suanli-region"] in {"shanghai", "wuhan"}  # the key was accepted upstream
    for text in seen:
        assert CANARY not in text
        assert CANARY[-8:] not in text
    db = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    assert db and CANARY.encode() not in db


MASTER_CANARY = "sk-master-canary-91d2e7c4b8a6"


def test_canary_client_keys_never_leak(tmp_path: Path, caplog: pytest.LogCaptureFixture, ledger_opts: dict):
    """The master key and a virtual key's secret: in no log, error, status, listing, export or database."""
    from suanli.router.ops.cli import main
    from tests.backends import read, sql
    from tests.integration.test_keys import admin

    config = small_config(tmp_path, **ledger_opts)
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with running_proxy(config, master_key=MASTER_CANARY) as proxy:
        status, made = admin(proxy, "POST", "/admin/keys", {"name": "canary", "rpm": 2,
                                                            "budget_yuan_per_day": 0.0001}, key=MASTER_CANARY)
        assert status == 201
        virtual = made["key"]
        client = openai.OpenAI(base_url=proxy.base_url, api_key=virtual, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="deepseek-flash", messages=MESSAGES,
                                                               max_tokens=2)
        seen += [raw.text, str(dict(raw.headers))]
        for _ in range(2):  # over budget, then over rpm
            with pytest.raises(openai.RateLimitError) as exc:
                client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=400)
            seen += [str(exc.value.body), str(dict(exc.value.response.headers))]
        for wrong in (virtual + "x", MASTER_CANARY + "x"):
            with pytest.raises(openai.AuthenticationError) as exc:
                openai.OpenAI(base_url=proxy.base_url, api_key=wrong, max_retries=0).models.list()
            seen.append(str(exc.value.body))
        for path in ("/admin/keys", f"/admin/keys/{made['id']}", "/admin/vouchers", "/admin/status"):
            status, body = admin(proxy, "GET", path, key=MASTER_CANARY)
            assert status == 200, path
            seen.append(str(body))
        metrics = urllib.request.Request(f"http://127.0.0.1:{proxy.port}/metrics",
                                         headers={"Authorization": f"Bearer {MASTER_CANARY}"})
        with urllib.request.urlopen(metrics, timeout=10) as response:
            seen.append(response.read().decode())
        seen.append(str(admin(proxy, "GET", "/admin/keys", key=virtual)))
        seen.append(str(admin(proxy, "DELETE", f"/admin/keys/{made['id']}", key=MASTER_CANARY)))
        seen.append(str(read(proxy, lambda r: repr(r.config))))
    config_path = tmp_path / "suanli.yaml"
    config_path.write_text(f"ledger: {{url: '{config.ledger.url}'}}\n"
                           "regions: [{id: r, zone: east, provider: sim,"
                           " models: [{name: m, price: {input: 1, output: 1}}]}]\n")
    assert main(["audit", "export", "--config", str(config_path), "--out", str(tmp_path / "claim.csv")]) == 0
    seen.append((tmp_path / "claim.csv").read_text())
    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.exc_info) for record in caplog.records if record.exc_info]
    for text in seen:
        for secret in (virtual, MASTER_CANARY):
            assert secret not in text
            assert secret[-8:] not in text
    db = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    if ledger_opts:  # PostgreSQL: every row of every table of the ledger's schema, as text
        url = config.ledger.url
        listed = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        tables = [name for (name,) in sql(url, listed)]
        db = "".join(str(sql(url, f"SELECT t::text FROM {table} t")) for table in tables).encode()
        assert "keys" in tables and "usage" in tables
    assert db and virtual.encode() not in db and MASTER_CANARY.encode() not in db
