"""A full disk under the SQLite ledger (``max_page_count`` stands in for a full tmpfs).

Refusals are 503 with Retry-After (never 500); every answer a client received has its usage
row (settles commit in the room kept back); ``suanli serve`` starts on a full ledger and
refuses work cleanly, and takes work again once space returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from suanli.router.ledger.sqlite.ledger import Ledger, open_readonly
from tests.harness import small_config
from tests.integration.test_crash import _free_port, _start


def _post(port: int, request_id: str, *, stream: bool = False) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 8,
            "stream": stream}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _write_config(tmp_path: Path, url: str) -> tuple[Path, object]:
    config = small_config(tmp_path, ledger={"url": url})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), allow_unicode=True))
    return path, config


def test_a_full_disk_refuses_with_503_and_loses_no_answered_usage(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    base = f"sqlite:///{db}?spare_pages=8"
    path, config = _write_config(tmp_path, base)
    first = Ledger.open(base, config.vouchers, clock=lambda: datetime.now(UTC))
    pages = int(first._read("PRAGMA page_count")[0][0])
    first.close()
    capped = f"{base}&max_page_count={pages + 4}"
    path, config = _write_config(tmp_path, capped)
    port, log = _free_port(), tmp_path / "server.log"
    server = _start(path, port, log)
    results: list[tuple[str, int, dict[str, str], bytes]] = []

    def load(worker: int) -> None:
        for i in range(40):
            rid = f"w{worker}-{i}"
            status, headers, body = _post(port, rid, stream=i % 5 == 0)
            results.append((rid, status, headers, body))

    try:
        workers = [threading.Thread(target=load, args=(w,)) for w in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        statuses = [status for _, status, _, _ in results]
        assert 500 not in statuses, log.read_text()[-3000:]
        assert set(statuses) <= {200, 503}
        refused = [r for r in results if r[1] == 503]
        assert refused, "the capped ledger never filled"
        assert all(int(h["Retry-After"]) >= 1 for _, _, h, _ in refused)
        assert all(json.loads(b)["error"]["code"] == "ledger_unavailable" for _, _, _, b in refused)
        # A streamed answer counts as received when it ended with [DONE].
        answered = {rid for rid, status, _, body in results
                    if status == 200 and (b"[DONE]" in body or not body.startswith(b"data:"))}
        assert len(answered) > 10
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)

    with open_readonly(capped) as ledger:
        rows = {row.request_id for row in ledger.usage()}
        assert answered <= rows  # every answer a client got is on the ledger
        assert ledger.verify_chain() is None

    # Still full: serve starts, answers /health, refuses work with 503 + Retry-After.
    server = _start(path, port, log)
    try:
        status, headers, _ = _post(port, "while-full")
        assert status == 503 and int(headers["Retry-After"]) >= 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)

    # Space returns: work is taken again, and nothing was left pending.
    path, config = _write_config(tmp_path, base)
    server = _start(path, port, log)
    try:
        status, _, _ = _post(port, "after")
        assert status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    with open_readonly(base) as ledger:
        assert ledger.pending_holds() == 0
        assert "after" in {row.request_id for row in ledger.usage()}
        (status_row,) = [v for v in ledger.vouchers() if v.id == "wuhan-tokens"]
        spent = sum(r.voucher_units for r in ledger.usage() if r.voucher_id == "wuhan-tokens")
        assert abs(status_row.balance - (status_row.amount - spent)) < 1e-9 and status_row.balance >= 0


def _mount_tmpfs(folder: Path, size: str) -> bool:
    """A real, small filesystem (root only, where mounting is allowed); False when it cannot."""
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_a_full_tmpfs_refuses_with_503_and_recovers_when_space_returns(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("needs root and a mountable tmpfs")
    try:
        path, config = _write_config(tmp_path, f"sqlite:///{disk / 'ledger.db'}")
        port, log = _free_port(), tmp_path / "server.log"
        server = _start(path, port, log)
        results: list[tuple[str, int, dict[str, str], bytes]] = []

        def load(worker: int) -> None:
            i = 0
            while not any(status == 503 for _, status, _, _ in results[-50:]) or i % 40:
                i += 1
                rid = f"w{worker}-{i}"
                status, headers, body = _post(port, rid, stream=i % 5 == 0)
                results.append((rid, status, headers, body))
                if i > 3000:
                    break

        try:
            workers = [threading.Thread(target=load, args=(w,)) for w in range(6)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(240)
            statuses = [status for _, status, _, _ in results]
            assert 500 not in statuses, log.read_text()[-3000:]
            assert set(statuses) <= {200, 503} and 503 in statuses
            assert all(int(h["Retry-After"]) >= 1 for _, s, h, _ in results if s == 503)
            answered = {rid for rid, status, _, body in results
                        if status == 200 and (b"[DONE]" in body or not body.startswith(b"data:"))}
            # Space returns (the filesystem grows): work is taken again without a restart.
            subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
            deadline = time.monotonic() + 15
            while _post(port, "after")[0] != 200:
                assert time.monotonic() < deadline, "no recovery after space returned"
                time.sleep(0.5)
            answered.add("after")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        with open_readonly(f"sqlite:///{disk / 'ledger.db'}") as ledger:
            rows = {row.request_id for row in ledger.usage()}
            assert answered <= rows  # no answer a client received is missing
            assert ledger.pending_holds() == 0 and ledger.verify_chain() is None
        assert not (disk / "ledger.db-wal").exists() or (disk / "ledger.db-wal").stat().st_size < 512 * 1024
    finally:
        subprocess.run(["umount", str(disk)], check=False)
