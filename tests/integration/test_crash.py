"""kill -9 the proxy under load, restart it: no pending hold, and usage rows match the answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import openai
import yaml

from suanli.router.ledger.sqlite.ledger import Ledger
from tests.harness import small_config

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(config_path: Path, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "suanli", "serve", "--config", str(config_path), "--port", str(port)],
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "SUANLI_LOG_LEVEL": "INFO"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not come up: {log.read_text()[-2000:]}")


def test_kill_9_under_load_loses_no_settled_usage(tmp_path: Path):
    config = small_config(tmp_path)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), allow_unicode=True)
    )
    port = _free_port()
    log = tmp_path / "server.log"
    server = _start(config_path, port, log)
    answered: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=10)
        while not stop.is_set():
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="deepseek-flash", messages=[{"role": "user", "content": "你好"}], max_tokens=8
                )
                answered.append(raw.headers["x-request-id"])
            except openai.APIError as exc:
                failed.append(type(exc).__name__)
                return

    workers = [threading.Thread(target=load) for _ in range(12)]
    for worker in workers:
        worker.start()
    # kill once the load is really flowing (a busy machine can take seconds to get there),
    # not after a fixed sleep
    deadline = time.monotonic() + 30
    while len(answered) < 40 and not failed and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    stop.set()
    for worker in workers:
        worker.join(15)
    assert len(answered) > 20, log.read_text()[-2000:]
    assert failed  # the kill really cut requests off mid-flight

    restarted = _start(config_path, port, log)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/vouchers", timeout=5) as response:
            vouchers = yaml.safe_load(response.read())["data"]
        assert all(v["held"] == 0 for v in vouchers)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(15)
    ledger = Ledger.open(config.ledger.url, config.vouchers, clock=lambda: datetime.now(UTC))
    try:
        assert ledger.pending_holds() == 0
        rows = {row.request_id for row in ledger.usage()}
        assert set(answered) <= rows  # every answer a client got was settled
        assert len(rows - set(answered)) <= len(workers)  # at most the requests cut off mid-flight
        for status in ledger.vouchers():
            spent = sum(r.voucher_units for r in ledger.usage() if r.voucher_id == status.id)
            assert abs(status.balance - (status.amount - spent)) < 1e-9
    finally:
        ledger.close()
