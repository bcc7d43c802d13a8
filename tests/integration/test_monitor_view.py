"""The monitor's screen for a real status document: one timezone, whole columns at 160."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import openai
from rich.console import Console

from suanli.router.ops.monitor_view import render_status
from tests.harness import running_proxy, small_config


def _screen(tmp_path: Path, width: int) -> str:
    with running_proxy(small_config(tmp_path)) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
        for _ in range(3):
            client.chat.completions.create(
                model="deepseek-flash", messages=[{"role": "user", "content": "你好"}]
            )
        with urllib.request.urlopen(proxy.base_url[: -len("/v1")] + "/admin/status", timeout=10) as response:
            doc = json.loads(response.read())
    console = Console(width=width, record=True, color_system=None)
    console.print(render_status(doc, width=width, height=200, source="test"))
    return console.export_text()


def test_every_time_is_in_the_configs_timezone_and_voucher_columns_are_whole(tmp_path: Path):
    screen = _screen(tmp_path, 160)
    header = screen.splitlines()[1]
    assert re.search(r"\d\d:\d\d:\d\d \+0800", header), header  # Asia/Shanghai, not the machine's UTC
    vouchers = screen[screen.index("vouchers") : screen.index("recent routing")]
    assert "…" not in vouchers, vouchers
    assert "expires in" in vouchers
