"""Virtual keys over HTTP: the admin API, 401s, residency, class/origin defaults, rpm, expiry."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest

from tests.backends import read, sql
from tests.harness import running_proxy, small_config

MASTER = "sk-master-keys-test"
MESSAGES = [{"role": "user", "content": "你好"}]


def admin(proxy, method: str, path: str, body: dict | None = None,
          key: str | None = MASTER) -> tuple[int, dict]:
    """One admin call with urllib: (status, JSON body)."""
    url = f"http://127.0.0.1:{proxy.port}{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def new_key(proxy, **spec) -> dict:
    status, body = admin(proxy, "POST", "/admin/keys", {"name": "team-a", **spec})
    assert status == 201, body
    return body


def client(proxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)


class Clock:
    """A settable clock for the proxy."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_admin_api_needs_the_master_key(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        virtual = new_key(proxy)["key"]
        for key in (None, "sk-wrong", virtual):
            for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/vouchers"),
                                 ("DELETE", "/admin/keys/whatever")):
                payload = {"name": "x"} if method == "POST" else None
                status, body = admin(proxy, method, path, payload, key=key)
                assert status == 401, (method, path, key, body)
                assert body["error"]["type"] == "invalid_request_error"
        status, body = admin(proxy, "GET", "/admin/keys")
        assert status == 200 and len(body["data"]) == 1


def test_without_a_master_key_the_key_admin_api_is_refused(tmp_path: Path):
    with running_proxy(small_config(tmp_path)) as proxy:
        status, body = admin(proxy, "POST", "/admin/keys", {"name": "x"}, key=None)
        assert status == 401
        assert "master key" in body["error"]["message"]


def test_create_list_show_revoke(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        made = new_key(proxy, budget_yuan_per_day=5, budget_yuan_per_month=50, allowed_zones=["east"],
                       default_class="batch", origin="west", rpm=100, expires="2099-01-01T00:00:00")
        secret, key_id = made["key"], made["id"]
        assert secret.startswith("sk-suanli-") and len(secret) > 40
        assert made["expires"].startswith("2098-12-31T16:00:00")  # naive times are the config's timezone
        status, listed = admin(proxy, "GET", "/admin/keys")
        assert status == 200
        (row,) = listed["data"]
        assert secret not in json.dumps(listed)
        assert row["id"] == key_id and row["budget_yuan_per_day"] == 5 and row["allowed_zones"] == ["east"]
        assert row["revoked"] is None
        assert client(proxy, secret).chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2).choices
        status, shown = admin(proxy, "GET", f"/admin/keys/{key_id}")
        assert status == 200 and shown["spent_yuan_today"] > 0 and "key" not in shown
        status, revoked = admin(proxy, "DELETE", f"/admin/keys/{key_id}")
        assert status == 200 and revoked["deleted"] is True and revoked["revoked"]
        with pytest.raises(openai.AuthenticationError) as exc:
            client(proxy, secret).chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert exc.value.code == "key_revoked"
        assert admin(proxy, "DELETE", "/admin/keys/key-nope")[0] == 404
        assert admin(proxy, "GET", "/admin/keys/key-nope")[0] == 404


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ({}, "name"),
        ({"name": "x", "allowed_regions": ["atlantis"]}, "allowed_regions"),
        ({"name": "x", "allowed_zones": ["north"]}, "allowed_zones.0"),
        ({"name": "x", "budget_yuan_per_day": -1}, "budget_yuan_per_day"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "expires": "2001-01-01T00:00:00Z"}, "expires"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
def test_bad_key_specs_are_400(tmp_path: Path, spec: dict, param: str):
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:
        status, body = admin(proxy, "POST", "/admin/keys", spec)
        assert status == 400, body
        assert body["error"]["param"] == param
        assert admin(proxy, "GET", "/admin/keys")[1]["data"] == []


def test_no_wrong_revoked_or_expired_key_is_401(tmp_path: Path, ledger_opts: dict):
    clock = Clock()
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER, clock=clock) as proxy:
        soon = (clock.now + timedelta(hours=1)).isoformat()
        secret = new_key(proxy, expires=soon)["key"]
        assert client(proxy, secret).chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2).choices
        for key, code in (("", "invalid_api_key"), ("sk-suanli-wrong", "invalid_api_key")):
            with pytest.raises(openai.AuthenticationError) as exc:
                openai.OpenAI(base_url=proxy.base_url, api_key=key or "x", max_retries=0,
                              default_headers={"Authorization": ""} if not key else None,
                              ).chat.completions.create(model="deepseek-flash", messages=MESSAGES)
            assert exc.value.code == code
        clock.now += timedelta(hours=2)
        with pytest.raises(openai.AuthenticationError) as exc:
            client(proxy, secret).chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert exc.value.code == "key_expired"
        assert secret not in str(exc.value.body)


def _holds(proxy) -> int:
    return sql(proxy.router.config.ledger.url, "SELECT COUNT(*) FROM holds")[0][0]


def test_a_region_outside_the_keys_zones_is_never_chosen(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, vouchers=[], **ledger_opts), master_key=MASTER) as proxy:
        east_only = client(proxy, new_key(proxy, allowed_zones=["east"])["key"])
        anyone = client(proxy, MASTER)
        # Batch work is cheapest in the west: the master key goes there, the east-only key may not.
        batch = {"X-Suanli-Class": "batch"}
        raw = anyone.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2, extra_headers=batch)
        assert raw.headers["x-suanli-region"] == "qingyang"
        for _ in range(5):
            raw = east_only.chat.completions.with_raw_response.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=2, extra_headers=batch)
            assert raw.headers["x-suanli-region"] in {"shanghai", "wuhan"}
        holds = _holds(proxy)
        with pytest.raises(openai.PermissionDeniedError) as exc:
            east_only.chat.completions.create(model="qingyang/deepseek-flash", messages=MESSAGES)
        assert exc.value.code == "permission_denied"
        assert _holds(proxy) == holds  # refused before any hold was taken
        rows = read(proxy, lambda r: r.ledger.usage())
        assert [row.region for row in rows if row.key_id != "master"].count("qingyang") == 0


def test_allowed_regions_limit_the_choice_to_those_regions(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        only_shanghai = client(proxy, new_key(proxy, allowed_regions=["shanghai"])["key"])
        for _ in range(3):
            raw = only_shanghai.chat.completions.with_raw_response.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=2)
            assert raw.headers["x-suanli-region"] == "shanghai"


def test_key_default_class_and_origin_apply_unless_the_request_says(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, vouchers=[], **ledger_opts), master_key=MASTER) as proxy:
        batch_key = client(proxy, new_key(proxy, default_class="batch")["key"])
        raw = batch_key.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2)
        assert raw.headers["x-suanli-region"] == "qingyang"  # batch goes west
        raw = batch_key.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2,
            extra_headers={"X-Suanli-Class": "interactive"})
        assert raw.headers["x-suanli-region"] != "qingyang"  # from the east, the west misses the SLO
        west_key = client(proxy, new_key(proxy, origin="west")["key"])
        raw = west_key.chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2)
        assert raw.headers["x-suanli-region"] == "qingyang"  # close to a western caller, and cheapest
        rows = read(proxy, lambda r: r.ledger.usage())
        assert [(row.work_class, row.origin) for row in rows] == [
            ("batch", "east"), ("interactive", "east"), ("interactive", "west")]


def test_rpm_limit_is_429_with_retry_after(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        limited = client(proxy, new_key(proxy, rpm=2)["key"])
        for _ in range(2):
            limited.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=2)
        with pytest.raises(openai.RateLimitError) as exc:
            limited.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=2)
        assert exc.value.code == "rate_limit_exceeded"
        assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60
        # Another key is not affected.
        client(proxy, new_key(proxy)["key"]).chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2)


def test_a_batch_of_an_east_only_key_runs_no_line_in_the_west(tmp_path: Path):
    from suanli.router.core.clocks import VirtualClock
    from tests.integration.workload_helpers import TEN_AM, batch_file, night_config, wait_for

    clock = VirtualClock(TEN_AM, speed=20000)  # the cheap western night would come in seconds
    with running_proxy(night_config(tmp_path), master_key=MASTER, clock=clock) as proxy:
        made = new_key(proxy, allowed_zones=["east"])
        east_only = client(proxy, made["key"])
        uploaded = east_only.files.create(file=batch_file(tmp_path, 4).open("rb"), purpose="batch")
        batch = east_only.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")

        def finished():
            found = east_only.batches.retrieve(batch.id)
            return found if found.status in ("completed", "failed") else None

        done = wait_for(finished, what="the batch to finish")
        assert (done.status, done.request_counts.completed) == ("completed", 4)
        rows = proxy.call(lambda r: r.ledger.usage())
    assert len(rows) == 4
    assert {row.key_id for row in rows} == {made["id"]}
    assert {row.region for row in rows} <= {"shanghai", "wuhan"}


def test_keys_and_their_policy_survive_a_restart(tmp_path: Path, ledger_opts: dict):
    config = small_config(tmp_path, **ledger_opts)
    with running_proxy(config, master_key=MASTER) as proxy:
        made = new_key(proxy, allowed_regions=["wuhan"], budget_yuan_per_day=1.0)
        client(proxy, made["key"]).chat.completions.create(model="deepseek-flash", messages=MESSAGES,
                                                           max_tokens=2)
        spent = admin(proxy, "GET", f"/admin/keys/{made['id']}")[1]["spent_yuan_today"]
    with running_proxy(config, master_key=MASTER) as proxy:
        raw = client(proxy, made["key"]).chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=2)
        assert raw.headers["x-suanli-region"] == "wuhan"
        shown = admin(proxy, "GET", f"/admin/keys/{made['id']}")[1]
        assert shown["spent_yuan_today"] == pytest.approx(2 * spent)


def test_a_fine_tuning_job_of_an_east_only_key_is_not_placed_in_the_west(tmp_path: Path):
    from suanli.router.core.clocks import VirtualClock
    from tests.integration.workload_helpers import TEN_AM, night_config

    training = tmp_path / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}
    training.write_text(json.dumps(line, ensure_ascii=False) + "\n")
    # Only qingyang (west) can fine-tune here: the east-only key has nowhere to go.
    with running_proxy(night_config(tmp_path), master_key=MASTER, clock=VirtualClock(TEN_AM)) as proxy:
        east_only = client(proxy, new_key(proxy, allowed_zones=["east"])["key"])
        uploaded = east_only.files.create(file=training.open("rb"), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError, match="among the regions this key may use"):
            east_only.fine_tuning.jobs.create(model="deepseek-flash", training_file=uploaded.id)
        assert list(east_only.fine_tuning.jobs.list()) == []
        anywhere = client(proxy, new_key(proxy)["key"])
        mine = anywhere.files.create(file=training.open("rb"), purpose="fine-tune")  # keys own their files
        job = anywhere.fine_tuning.jobs.create(model="deepseek-flash", training_file=mine.id)
        events = [e.message for e in anywhere.fine_tuning.jobs.list_events(job.id)]
        assert any("placed the job on region qingyang" in message for message in events)


def test_models_list_only_what_the_key_may_use(tmp_path: Path, ledger_opts: dict):
    with running_proxy(small_config(tmp_path, **ledger_opts), master_key=MASTER) as proxy:
        everything = {m.id for m in client(proxy, MASTER).models.list()}
        assert {"qingyang/deepseek-flash", "shanghai/text-embedding-v4"} <= everything
        only_wuhan = client(proxy, new_key(proxy, allowed_regions=["wuhan"])["key"])
        assert {m.id for m in only_wuhan.models.list()} == {"deepseek-flash", "wuhan/deepseek-flash"}
        with pytest.raises(openai.NotFoundError):
            only_wuhan.models.retrieve("qingyang/deepseek-flash")
        assert only_wuhan.models.retrieve("wuhan/deepseek-flash").owned_by == "wuhan"
