"""Smoke tests: every example runs, and the CLI commands answer as the README says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from suanli.config import catalog_text
from tests.harness import running_proxy, small_config

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "suanli"]


def _run(args: list[str], *, cwd: Path = ROOT, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _catalog_with_ledger(tmp_path: Path) -> dict:
    data = yaml.safe_load(catalog_text())
    data["ledger"] = {"url": f"sqlite:///{tmp_path / 'ledger.db'}"}
    return data


def test_openai_client_example_against_the_catalog(tmp_path: Path):
    from suanli.config import load_config

    with running_proxy(load_config(_catalog_with_ledger(tmp_path))) as proxy:
        result = _run([sys.executable, str(ROOT / "examples" / "openai_client.py"), proxy.base_url])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("interactive -> ")
    assert lines[1].split()[2] in {
        "chongqing",
        "guiyang",
        "qingyang",
        "zhongwei",
        "horinger",
        "wuhan",
        "shanghai",
    }
    assert "embeddings  -> 2 vectors" in result.stdout


def test_embedded_router_example_runs_in_process(tmp_path: Path):
    result = _run([sys.executable, str(ROOT / "examples" / "embedded_router.py")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "voucher=" in result.stdout and "balances:" in result.stdout
    assert (tmp_path / "suanli-embedded.db").exists()


def test_example_config_checks_with_keys_from_the_environment():
    keys = {
        name: "sk-test"
        for name in ("WUHAN_API_KEY", "SHANGHAI_API_KEY", "QINGYANG_API_KEY", "DEEPSEEK_API_KEY")
    }
    result = _run([*CLI, "config", "check", str(ROOT / "examples" / "config.example.yaml")], env=keys)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "sk-test" not in result.stdout


def test_config_check_names_each_problem(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions:\n  - id: x\n    zone: north\n    provider: sim\n    models: []\n")
    result = _run([*CLI, "config", "check", str(bad)])
    assert result.returncode == 2
    assert "regions[0].zone" in result.stderr and "regions[0].models" in result.stderr


def test_vouchers_from_the_local_ledger_and_from_a_server(tmp_path: Path):
    config = small_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    ledger = Path(config.ledger.url.removeprefix("sqlite:///"))
    for command in (["vouchers"], ["report"], ["audit", "verify"]):
        missing = _run([*CLI, *command, "--config", str(path)], cwd=tmp_path.parent)
        assert missing.returncode == 2 and f"no ledger at {ledger}" in missing.stderr, missing.stderr
    assert not ledger.exists()  # refused, not invented
    with running_proxy(config) as proxy:
        remote = _run([*CLI, "vouchers", "--url", proxy.base_url[: -len("/v1")]])
    assert remote.returncode == 0, remote.stderr
    assert "wuhan-tokens" in remote.stdout and "tok" in remote.stdout
    local = _run([*CLI, "vouchers", "--config", str(path), "--json"], cwd=tmp_path.parent)
    assert local.returncode == 0, local.stderr
    assert {row["id"] for row in json.loads(local.stdout)} == {"wuhan-tokens", "shanghai-credit"}
    assert f"reading ledger sqlite:///{ledger}" in local.stderr


def test_demo_prints_the_base_url_and_examples(tmp_path: Path):
    port = 18000 + os.getpid() % 1000
    process = subprocess.Popen(
        [*CLI, "demo", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, out = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "Ctrl-C" not in out:
            out += process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in out
        assert "curl" in out and "OpenAI(base_url=" in out
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)


def test_demo_traffic_keeps_interactive_east_sends_batch_west_and_leaves_no_files(tmp_path: Path):
    port = 19000 + os.getpid() % 1000
    process = subprocess.Popen(
        [*CLI, "demo", "--port", str(port), "--traffic", "--minutes", "0.5"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, lines = time.monotonic() + 120, []
        while time.monotonic() < deadline and not any("demo traffic done" in line for line in lines):
            lines.append(process.stdout.readline())
        report = [line for line in lines if line.startswith("sent ")][-1]
        status = json.loads(
            subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/admin/status"], capture_output=True,
                           text=True, timeout=30, check=True).stdout
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert "errors: none" in report, report  # no interactive 503 (nor anything else)
    east = int(report.split("interactive in the east ")[1].split("%")[0])
    assert east >= 90, report
    batch = report.split("| batch: ")[1].split(" |")[0]
    assert batch.split()[0] in {"chongqing", "guiyang", "qingyang", "zhongwei", "horinger"}, report
    spent = {v["id"]: v["spent"] for v in status["vouchers"]}
    assert spent["wuhan-tokens-launch"] > 0  # the voucher that expires first is drawn on
    assert not list(tmp_path.iterdir())  # the demo's ledger and files live in a folder of its own


def test_a_port_in_use_is_one_clear_line_not_a_traceback(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run([*CLI, "demo", "--port", str(port)], cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_explains_bands_cache_packages_and_caps():
    result = _run([*CLI, "config", "check", str(ROOT / "benchmarks" / "scenarios" / "peaks" / "config.yaml")],
                  env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "weekdays 09:00-12:00 x2; weekdays 14:00-18:00 x2; otherwise x1" in out
    assert "cached input pays 0.1 instead of 1 yuan/M" in out and "at most 300 s before" in out
    assert "holds 2,000,000 tokens afresh each local month (from the 1st, 00:00)" in out
    assert "pays at most 2.5 yuan per local day" in out
    assert "starts in 00:30-08:30 (every day, Asia/Shanghai) pay x0.5" in out


def test_bundled_catalog_check_shows_deepseek_peaks_and_the_monthly_package(tmp_path: Path):
    catalog = tmp_path / "catalog.yaml"
    from suanli.config import catalog_text

    catalog.write_text(catalog_text(), encoding="utf-8")
    result = _run([*CLI, "config", "check", str(catalog)], env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "shanghai/deepseek-flash" in result.stdout and "zhongwei-telecom-monthly" in result.stdout
