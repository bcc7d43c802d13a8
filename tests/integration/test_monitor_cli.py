"""``suanli monitor`` and ``suanli report`` against a running ``suanli demo`` under traffic.

The live monitor runs in a real terminal (tmux): keys are sent with send-keys and the
screen read back with capture-pane.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from suanli.router.ledger.sqlite.ledger import open_readonly

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "suanli"]
REGIONS = ("shanghai", "wuhu", "wuhan", "chongqing", "guiyang", "qingyang", "zhongwei", "horinger")
TMUX = shutil.which("tmux")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def _demo(tmp_path: Path, port: int) -> Iterator[str]:
    """``suanli demo`` in a subprocess with its ledger in ``tmp_path``; yields the ledger URL."""
    ledger_url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {**os.environ, "SUANLI_LEDGER_URL": ledger_url}
    process = subprocess.Popen(
        [*CLI, "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _up(port) or process.poll() is not None, 60, "the demo to start")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield ledger_url
    finally:
        process.terminate()
        process.wait(20)


@contextmanager
def _traffic(port: int) -> Iterator[list[int]]:
    """Requests to the demo from a background thread until the block ends; yields [count]."""
    done = [0]
    stop = threading.Event()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

    def run() -> None:
        while not stop.is_set():
            headers = {"X-Suanli-Class": "batch"} if done[0] % 3 == 2 else {}
            client.chat.completions.create(
                model="deepseek-flash",
                messages=[{"role": "user", "content": "东数西算"}],
                max_tokens=16,
                extra_headers=headers,
            )
            done[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    port = _free_port()
    with _demo(tmp_path_factory.mktemp("demo"), port) as ledger_url:
        yield port, ledger_url


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_monitor_once_prints_regions_vouchers_and_spend_under_traffic(demo):
    port, _ = demo
    with _traffic(port) as done:
        _wait_for(lambda: done[0] >= 3, 30, "three requests")
        result = _run([*CLI, "monitor", "--once", "--url", f"http://127.0.0.1:{port}"])
        served = done[0]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for region in REGIONS:
        assert region in out
    assert "shanghai-credit-q4" in out and "wuhan-tokens-launch" in out
    requests_today = int(re.search(r"today (\d+) requests", out)[1])
    assert 3 <= requests_today <= served
    assert "recent routing" in out and "deepseek-flash" in out


def test_monitor_once_says_when_the_server_is_unreachable():
    port = _free_port()
    result = _run([*CLI, "monitor", "--once", "--url", f"http://127.0.0.1:{port}"])
    assert result.returncode == 1
    assert f"cannot get the status from http://127.0.0.1:{port}" in result.stderr
    assert "refused" in result.stderr.lower()


def test_report_sums_the_ledger_by_region_voucher_key_and_class(demo):
    port, ledger_url = demo
    with _traffic(port) as done:
        _wait_for(lambda: done[0] >= 4, 30, "four requests")
    env = {"SUANLI_LEDGER_URL": ledger_url}
    as_json = _run([*CLI, "report", "--since", "1h", "--format", "json"], env=env)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    ledger = open_readonly(ledger_url)
    try:
        rows = ledger.usage()
    finally:
        ledger.close()
    assert report["totals"]["requests"] == len(rows) >= 4
    assert report["totals"]["cost_yuan"] == pytest.approx(sum(r.cost_yuan for r in rows), abs=1e-6)
    for dimension in ("region", "voucher", "key", "class"):
        assert sum(entry["requests"] for entry in report["by"][dimension]) == len(rows)
    classes = {entry["class"]: entry["requests"] for entry in report["by"]["class"]}
    assert classes == {c: sum(1 for r in rows if r.work_class == c) for c in {r.work_class for r in rows}}
    as_csv = _run([*CLI, "report", "--since", "1h", "--by", "region", "--format", "csv"], env=env)
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "dimension,value,requests,tokens,cost_yuan,cash_yuan,voucher_yuan"
    assert lines[-1].startswith(f"total,,{len(rows)},")
    assert all(line.startswith("region,") for line in lines[1:-1])
    empty = _run(
        [*CLI, "report", "--since", "2020-01-01", "--until", "2020-01-02", "--format", "json"], env=env
    )
    assert json.loads(empty.stdout)["totals"]["requests"] == 0
    bad = _run([*CLI, "report", "--since", "yesterday-ish"], env=env)
    assert bad.returncode == 2 and "is not a time" in bad.stderr


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_live_monitor_in_tmux_recovers_shows_balances_moving_and_quits_on_q(tmp_path: Path):
    port = _free_port()
    tmux = [TMUX, "-L", f"suanli-test-{os.getpid()}", "-f", "/dev/null"]
    command = f"cd {ROOT} && {sys.executable} -m suanli monitor --url http://127.0.0.1:{port}"

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "mon"], capture_output=True, text=True
        ).stdout

    def balance(text: str) -> str | None:
        line = next((x for x in text.splitlines() if "shanghai-credit-q4" in x), "")
        found = re.search(r"¥([\d,.]+)", line)
        return found[1] if found else None

    subprocess.run([*tmux, "new-session", "-d", "-s", "mon", "-x", "160", "-y", "50", command], check=True)
    try:
        _wait_for(lambda: "server unreachable" in screen(), 20, "the unreachable message")
        with _demo(tmp_path, port), _traffic(port) as done:
            first = _wait_for(lambda: balance(screen()), 30, "the voucher table")
            text = screen()
            for region in REGIONS:
                assert region in text
            assert "server unreachable" not in text
            _wait_for(
                lambda: balance(screen()) not in (None, first) and done[0] > 0, 30, "the balance to move"
            )
        subprocess.run([*tmux, "send-keys", "-t", "mon", "q"], check=True)
        _wait_for(
            lambda: subprocess.run([*tmux, "has-session", "-t", "mon"], capture_output=True).returncode != 0,
            10,
            "the monitor to quit on q",
        )
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_monitor_once_uses_the_master_key_and_names_a_refusal(tmp_path: Path):
    from tests.harness import running_proxy, small_config

    with running_proxy(small_config(tmp_path), master_key="sk-master-monitor") as proxy:
        url = proxy.base_url  # .../v1 is accepted too
        refused = _run([*CLI, "monitor", "--once", "--url", url, "--key", "sk-wrong"])
        allowed = _run(
            [*CLI, "monitor", "--once", "--url", url], env={"SUANLI_MASTER_KEY": "sk-master-monitor"}
        )
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr and "master key" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert "shanghai" in allowed.stdout and "wuhan-tokens" in allowed.stdout
