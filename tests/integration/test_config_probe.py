"""``suanli config check --probe`` against real sim platforms on loopback (``suanli sim``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

CLI = [sys.executable, "-m", "suanli"]
RIGHT = "sk-right-key-0123456789"
WRONG = "sk-wrong-key-9876543210"


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


@contextmanager
def _sims(tmp_path: Path) -> Iterator[int]:
    """Two sim platforms that want the key RIGHT, on two ports in a row; yields the first."""
    offer = {"name": "deepseek-flash", "price": {"input": 2.0, "output": 8.0}}
    regions = [
        {"id": name, "zone": "east", "provider": "sim", "api_key": RIGHT, "models": [offer]}
        for name in ("sim-a", "sim-b")
    ]
    path = tmp_path / "sims.yaml"
    path.write_text(yaml.safe_dump({"regions": regions}))
    port = _free_port_pair()
    process = subprocess.Popen(
        [*CLI, "sim", "--config", str(path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port + 1), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("suanli sim did not start within 60 s")
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_probe_names_bad_keys_unknown_models_and_unreachable_hosts(tmp_path: Path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]  # nothing listens once this socket closes
    with _sims(tmp_path) as port:
        a, b = f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port + 1}/v1"

        def region(rid: str, url: str, key_var: str, upstream: str = "deepseek-flash") -> dict:
            return {
                "id": rid,
                "zone": "east",
                "provider": "openai",
                "base_url": url,
                "api_key": f"${{{key_var}}}",
                "models": [
                    {"name": "deepseek-flash", "upstream": upstream, "price": {"input": 2.0, "output": 8.0}}
                ],
            }

        config = {
            "regions": [
                region("good", a, "GOOD_KEY"),
                region("badkey", a, "BAD_KEY"),
                region("typo", b, "GOOD_KEY", upstream="deepseek-flahs"),
                region("down", f"http://127.0.0.1:{dead}/v1", "GOOD_KEY"),
            ]
        }
        path = tmp_path / "mine.yaml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [*CLI, "config", "check", "--probe", "--timeout", "5", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "GOOD_KEY": RIGHT, "BAD_KEY": WRONG, "COLUMNS": "200"},
        )
    out = result.stdout
    assert result.returncode == 1, result.stderr
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert " ok " in rows["good"]
    assert "bad_key" in rows["badkey"] and "401" in rows["badkey"]
    assert "unknown_models" in rows["typo"] and "deepseek-flahs" in rows["typo"]
    assert "unreachable" in rows["down"]
    assert "probe: 1 of 4 region(s) fine, 3 not" in out
    for secret in (RIGHT, WRONG):
        assert secret not in out and secret not in result.stderr


def test_probe_of_the_bundled_catalog_starts_its_sims_and_finds_them_fine(tmp_path: Path):
    from suanli.config import catalog_text

    path = tmp_path / "catalog.yaml"
    path.write_text(catalog_text())
    result = subprocess.run(
        [*CLI, "config", "check", "--probe", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "probe: 8 of 8 region(s) fine" in result.stdout
