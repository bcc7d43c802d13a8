"""GET /admin/status and GET /metrics on the real proxy, after traffic from the openai SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import jsonschema
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ProxyThread, running_proxy, small_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "status.schema.json").read_text())
MASTER = "sk-master-status-test"
MESSAGES = [{"role": "user", "content": "算力券什么时候过期？"}]


def _get(proxy: ProxyThread, path: str, key: str | None = MASTER) -> tuple[int, bytes]:
    request = urllib.request.Request(proxy.base_url.removesuffix("/v1") + path)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _status(proxy: ProxyThread) -> dict:
    code, body = _get(proxy, "/admin/status")
    assert code == 200, body
    doc = json.loads(body)
    jsonschema.validate(doc, SCHEMA)
    return doc


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A proxy that has served 4 interactive, 2 batch, 1 embedding and 1 pinned batch (cash) request."""
    with running_proxy(small_config(tmp_path_factory.mktemp("status")), master_key=MASTER) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        last_id = ""
        for _ in range(4):
            client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=20)
        for _ in range(2):
            client.chat.completions.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=20, extra_body={"service_tier": "flex"}
            )
        client.embeddings.create(model="text-embedding-v4", input=["庆阳", "中卫"])
        raw = client.chat.completions.with_raw_response.create(
            model="qingyang/deepseek-flash",
            messages=MESSAGES,
            max_tokens=20,
            extra_headers={"X-Suanli-Class": "batch"},  # interactive would miss the SLO in the west
        )
        last_id = raw.headers["x-request-id"]
        yield proxy, last_id


def test_status_document_follows_its_schema_and_counts_the_traffic(served):
    proxy, last_id = served
    doc = _status(proxy)
    ledger = proxy.call(lambda router: router.ledger.totals())
    totals = doc["totals"]
    assert totals["requests_today"] == ledger["requests"] == 8
    assert totals["cash_yuan_today"] == pytest.approx(ledger["cash_yuan"], abs=1e-6)
    assert totals["voucher_yuan_today"] == pytest.approx(ledger["voucher_yuan"], abs=1e-6)
    assert totals["cash_yuan_today"] > 0  # the pinned qingyang request has no voucher
    assert totals["list_yuan_today"] >= totals["cost_yuan_today"] >= totals["cash_yuan_today"]
    assert totals["savings_vs_list_yuan"] == pytest.approx(
        totals["list_yuan_today"] - totals["cash_yuan_today"], abs=1e-6
    )
    regions = {r["id"]: r for r in doc["regions"]}
    assert set(regions) == {"shanghai", "wuhan", "qingyang"}
    assert sum(r["today"]["requests"] for r in regions.values()) == 8
    assert regions["qingyang"]["today"]["cash_yuan"] > 0
    assert regions["qingyang"]["zone"] == "west"
    for work_class in ("interactive", "batch"):
        assert sum(r["share_5m"][work_class] for r in regions.values()) == pytest.approx(1.0)
    served_here = regions["wuhan"]
    assert served_here["latency_ms"]["total"]["p50"] is not None
    assert served_here["limits"]["rpm_used"] >= 1
    # The most recent decision comes first and is the pinned request.
    assert doc["recent"][0]["request_id"] == last_id
    assert doc["recent"][0]["region"] == "qingyang" and doc["recent"][0]["voucher"] is None


def test_voucher_entries_match_the_ledger(served):
    proxy, _ = served
    doc = _status(proxy)
    balances = proxy.call(lambda router: router.ledger.balances())
    vouchers = {v["id"]: v for v in doc["vouchers"]}
    tokens = vouchers["wuhan-tokens"]
    assert tokens["available"] == pytest.approx(balances["wuhan-tokens"])
    assert tokens["spent"] > 0 and tokens["used_share"] == pytest.approx(tokens["spent"] / 100000, rel=1e-6)
    assert tokens["burn_per_hour"] == pytest.approx(tokens["spent"])  # everything was spent this hour
    exhaustion = datetime.fromisoformat(tokens["projected_exhaustion"])
    hours_left = (exhaustion - datetime.fromisoformat(doc["time"])).total_seconds() / 3600
    assert hours_left == pytest.approx(tokens["available"] / tokens["burn_per_hour"], rel=1e-3)
    assert tokens["expires_in_s"] > 0


def test_admin_status_and_metrics_need_the_master_key(served):
    proxy, _ = served
    request = urllib.request.Request(
        proxy.base_url.removesuffix("/v1") + "/admin/keys",
        data=json.dumps({"name": "app"}).encode(),
        headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        client_key = json.loads(response.read())["key"]
    for path in ("/admin/status", "/metrics"):
        for key in (None, "sk-wrong", client_key):
            code, body = _get(proxy, path, key=key)
            assert code == 401, (path, key, body)
            assert json.loads(body)["error"]["code"] == "invalid_api_key"


def test_metrics_count_requests_tokens_and_balances(served):
    proxy, _ = served
    code, body = _get(proxy, "/metrics")
    assert code == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    ledger = proxy.call(lambda router: router.ledger.totals())
    assert sum(s.value for s in samples["suanli_requests_total"]) == ledger["requests"]
    assert sum(s.value for s in samples["suanli_tokens_total"]) == ledger["tokens"]
    assert sum(s.value for s in samples["suanli_cash_yuan_total"]) == pytest.approx(ledger["cash_yuan"])
    assert sum(s.value for s in samples["suanli_request_latency_seconds_count"]) == ledger["requests"]
    balances = proxy.call(lambda router: router.ledger.balances())
    available = {s.labels["voucher"]: s.value for s in samples["suanli_voucher_available"]}
    assert available == pytest.approx(balances)
    spent = {s.labels["voucher"]: s.value for s in samples["suanli_voucher_spent_units_total"]}
    assert spent["wuhan-tokens"] == pytest.approx(100000 - balances["wuhan-tokens"])
    up = {s.labels["region"]: s.value for s in samples["suanli_region_up"]}
    assert up == {"shanghai": 1.0, "wuhan": 1.0, "qingyang": 1.0}


def test_alerts_for_an_expiring_voucher_a_full_limit_a_cooling_region_and_spent_cash(tmp_path: Path):
    now = datetime.now(UTC)
    config = small_config(
        tmp_path,
        vouchers=[
            {
                "id": "wuhan-expiring",
                "region": "wuhan",
                "kind": "tokens",
                "amount": 50000,
                "valid_from": (now - timedelta(days=1)).isoformat(),
                "expires": (now + timedelta(hours=12)).isoformat(),
            }
        ],
    )
    data = config.model_dump(mode="json")
    data["regions"][1]["limits"] = {"rpm": 2}
    data["regions"][0]["sim"] = {"rate_limit_rpm": 1}
    data["regions"][2]["sim"] = {"error_rate": 1.0, "error_status": 402}  # qingyang's prepaid cash is gone
    from suanli.config import load_config

    config = load_config(data)
    with running_proxy(config, master_key=MASTER) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        for _ in range(2):
            client.chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES, max_tokens=5)
        for _ in range(2):  # the second is refused with 429 and Retry-After: shanghai cools down
            try:
                client.chat.completions.create(
                    model="shanghai/deepseek-flash", messages=MESSAGES, max_tokens=5
                )
            except openai.APIStatusError:
                pass
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="qingyang/deepseek-flash",
                messages=MESSAGES,
                max_tokens=5,
                extra_headers={"X-Suanli-Class": "batch"},
            )
        doc = _status(proxy)
    kinds = {(a["kind"], a["subject"]) for a in doc["alerts"]}
    assert ("cash_exhausted", "qingyang") in kinds
    assert ("voucher_expiring", "wuhan-expiring") in kinds
    assert ("limit_high", "wuhan") in kinds  # 2 of 2 requests a minute
    assert ("region_cooling", "shanghai") in kinds
    regions = {r["id"]: r for r in doc["regions"]}
    assert regions["shanghai"]["health"]["state"] == "cooling"
    assert regions["wuhan"]["health"]["state"] == "ok"
    assert regions["qingyang"]["health"]["cash_exhausted"] is True
    assert regions["wuhan"]["health"]["cash_exhausted"] is False
    assert not any(a["kind"] == "spend_rate_high" for a in doc["alerts"])


class _Clock:
    """A settable clock for the router and its ledger."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def test_spend_rate_alert_and_greedy_counterfactual_from_the_ledger(tmp_path: Path):
    now = datetime.now(UTC).replace(microsecond=0)
    midnight = now.astimezone(ZoneInfo("Asia/Shanghai")).replace(hour=0, minute=0, second=0)
    clock = _Clock(midnight - timedelta(hours=1))  # yesterday, local time, within the last 25 hours
    with running_proxy(small_config(tmp_path), master_key=MASTER, clock=clock) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)

        def pinned_to_shanghai() -> None:
            client.chat.completions.create(model="shanghai/deepseek-flash", messages=MESSAGES, max_tokens=30)

        pinned_to_shanghai()  # the usual rate: this request's cash over 24 h
        clock.at = now
        for _ in range(3):
            pinned_to_shanghai()
        doc = _status(proxy)
        rows = proxy.call(lambda router: router.ledger.usage())
    alerts = [a for a in doc["alerts"] if a["kind"] == "spend_rate_high"]
    assert len(alerts) == 1 and alerts[0]["subject"] == "cash"
    assert len(rows) == 4 and doc["totals"]["requests_today"] == 3
    # Shanghai charged cash; greedy would have sent the same requests to wuhan on its token
    # voucher (the usage rows do not record the pin), paying nothing.
    totals = doc["totals"]
    assert totals["cash_yuan_today"] > 0
    assert totals["greedy_cash_yuan_today"] == 0.0
    assert totals["savings_vs_greedy_yuan"] == pytest.approx(-totals["cash_yuan_today"])
    list_yuan = sum((r.prompt_tokens * 2.0 + r.completion_tokens * 8.0) / 1e6 for r in rows[1:])
    assert totals["list_yuan_today"] == pytest.approx(list_yuan, abs=1e-6)


def test_greedy_replay_keeps_to_a_keys_allowed_regions(tmp_path: Path):
    with running_proxy(small_config(tmp_path), master_key=MASTER) as proxy:
        request = urllib.request.Request(
            proxy.base_url.removesuffix("/v1") + "/admin/keys",
            data=json.dumps({"name": "shanghai-only", "allowed_regions": ["shanghai"]}).encode(),
            headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            key = json.loads(response.read())
        client = openai.OpenAI(base_url=proxy.base_url, api_key=key["key"], max_retries=0)
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=30
            )
            assert raw.headers["x-suanli-region"] == "shanghai"
        doc = _status(proxy)
    totals = doc["totals"]
    # Greedy would have used wuhan's token voucher, but not for a key held to shanghai.
    assert totals["cash_yuan_today"] > 0
    assert totals["greedy_cash_yuan_today"] == pytest.approx(totals["cash_yuan_today"], abs=1e-6)
    assert totals["savings_vs_greedy_yuan"] == pytest.approx(0.0, abs=1e-6)
    assert {d["key"] for d in doc["recent"]} == {key["id"]}


async def test_the_sdk_gets_the_same_document_in_process(tmp_path: Path):
    from suanli.router import Router, StatusBoard

    async with Router(small_config(tmp_path), sim_latency_scale=0.0) as router:
        board = StatusBoard(router)
        await router.chat_completions(model="deepseek-flash", messages=MESSAGES, max_tokens=10)
        doc = await board.snapshot()
        await router.chat_completions(model="deepseek-flash", messages=MESSAGES, max_tokens=10)
        again = await board.snapshot()
    jsonschema.validate(doc, SCHEMA)
    assert doc["totals"]["requests_today"] == 1
    assert again["totals"]["requests_today"] == 2
    assert again["recent"][0]["request_id"] != doc["recent"][0]["request_id"]


def test_greedy_is_held_to_the_same_per_minute_limits(tmp_path: Path):
    """Greedy may not send a whole minute's traffic to a region whose rpm takes two: the
    counterfactual meets the limits suanli met, as simulate's greedy does."""
    regions = [
        {"id": "wuhan", "zone": "east", "provider": "sim", "rtt_ms": {"east": 10}, "ttft_ms": 40,
         "limits": {"rpm": 2},
         "models": [{"name": "deepseek-flash", "price": {"input": 1.0, "output": 4.0}}]},
        {"id": "shanghai", "zone": "east", "provider": "sim", "rtt_ms": {"east": 5}, "ttft_ms": 40,
         "models": [{"name": "deepseek-flash", "price": {"input": 2.0, "output": 8.0}}]},
    ]
    clock = _Clock(datetime(2026, 12, 1, 2, 0, 5, tzinfo=UTC))  # early in a clock minute
    config = small_config(tmp_path, regions=regions, vouchers=[])
    with running_proxy(config, master_key=MASTER, clock=clock) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        served = [
            client.chat.completions.with_raw_response.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=30
            ).headers["x-suanli-region"]
            for _ in range(6)
        ]
        doc = _status(proxy)
    assert served.count("wuhan") == 2 and served.count("shanghai") == 4
    totals = doc["totals"]
    # Unlimited, greedy would have paid wuhan's price six times and "saved" on suanli.
    assert totals["greedy_cash_yuan_today"] == pytest.approx(totals["cash_yuan_today"], rel=1e-9)
    assert totals["savings_vs_greedy_yuan"] == pytest.approx(0.0, abs=1e-9)
