"""``suanli serve`` reads the master key from SUANLI_MASTER_KEY; neither key reaches its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
import yaml

from tests.harness import small_config
from tests.integration.test_crash import ROOT, _free_port

MASTER = "sk-master-from-env"
MESSAGES = [{"role": "user", "content": "你好"}]

pytestmark = pytest.mark.timeout(90)


class _Server:
    def __init__(self, config_path: Path, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suanli", "serve", "--config", str(config_path), "--port", str(port)],
            cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "SUANLI_MASTER_KEY": MASTER},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not come up: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)


def test_serve_takes_the_master_key_from_the_environment(tmp_path: Path):
    config = small_config(tmp_path)
    config_path = tmp_path / "config.yaml"
    dumped = config.model_dump(mode="json", exclude_none=True)
    config_path.write_text(yaml.safe_dump(dumped, allow_unicode=True))
    port, log = _free_port(), tmp_path / "server.log"
    server = _Server(config_path, port, log)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.base}/v1/models", timeout=5)
        assert refused.value.code == 401
        spec = {"name": "survivor", "allowed_regions": ["wuhan"]}
        create = urllib.request.Request(
            f"{server.base}/admin/keys", data=json.dumps(spec).encode(),
            headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(create, timeout=5) as response:
            secret = json.loads(response.read())["key"]
        answer = openai.OpenAI(base_url=f"{server.base}/v1", api_key=secret, max_retries=0)
        raw = answer.chat.completions.with_raw_response.create(model="deepseek-flash", messages=MESSAGES,
                                                               max_tokens=2)
        assert raw.headers["x-suanli-region"] == "wuhan"
    finally:
        server.stop()
    assert secret not in log.read_text() and MASTER not in log.read_text()
