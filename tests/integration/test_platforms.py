"""examples/platforms.yaml against loopback stand-ins of DeepSeek, Bailian, Ark, SiliconFlow, Zhipu.

Each stand-in answers only the request shape its platform documents: the path under the
documented base URL (``/compatible-mode/v1/chat/completions`` for Bailian, ``/api/v3/...`` for
Ark, ``/api/paas/v4/...`` for Zhipu), ``Authorization: Bearer <that platform's key>``, and a model
name the platform serves. The config is used as shipped; only ``*_BASE_URL`` points each region
at its stand-in (same path, loopback host), as the config's comments say.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
from aiohttp import web

from suanli.config import load_config
from tests.harness import running_proxy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "platforms.yaml"

# region id -> (key variable, base URL variable, model names the platform documents)
PLATFORMS = {
    "deepseek": (
        "DEEPSEEK_API_KEY",
        "DEEPSEEK_BASE_URL",
        {"deepseek-flash", "deepseek-v4-pro", "deepseek-chat"},
    ),
    "bailian": ("DASHSCOPE_API_KEY", "BAILIAN_BASE_URL", {"qwen3.5-plus", "qwen-plus", "qwen3-max"}),
    "ark": ("ARK_API_KEY", "ARK_BASE_URL", {"doubao-seed-2-0-pro-260215", "doubao-seed-2-0-lite-260215"}),
    "siliconflow": (
        "SILICONFLOW_API_KEY",
        "SILICONFLOW_BASE_URL",
        {"deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-8B"},
    ),
    "zhipu": ("ZHIPUAI_API_KEY", "ZHIPU_BASE_URL", {"glm-5.3", "glm-5.3-flash", "glm-4.7"}),
}


def _documented_bases() -> dict[str, str]:
    """Base URL variable -> the documented URL the config falls back to."""
    return dict(re.findall(r"\$\{(\w+_BASE_URL):-([^}]+)\}", CONFIG.read_text(encoding="utf-8")))


class StandIn:
    """One platform's documented shape on 127.0.0.1; records every call it accepted or refused."""

    def __init__(self, region: str, documented: str, key: str, models: set[str]) -> None:
        self.region, self.key, self.models = region, key, models
        self.prefix = urlsplit(documented).path.rstrip("/")
        self.calls: list[dict] = []
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"{self.prefix}/chat/completions", self._chat)
        app.router.add_get(f"{self.prefix}/models", self._models)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(
                {"error": {"message": "Authentication Fails", "type": "auth"}}, status=401
            )
        return None

    async def _models(self, request: web.Request) -> web.Response:
        self.calls.append(
            {"method": "GET", "path": request.path, "auth": request.headers.get("Authorization")}
        )
        return self._refusal(request) or web.json_response(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "owned_by": self.region} for m in self.models],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(
            {
                "method": "POST",
                "path": request.path,
                "auth": request.headers.get("Authorization"),
                "model": body.get("model"),
                "stream": bool(body.get("stream")),
            }
        )
        refused = self._refusal(request)
        if refused is not None:
            return refused
        if body.get("model") not in self.models:
            return web.json_response(
                {"error": {"message": "Model Not Exist", "type": "invalid_request_error"}}, status=400
            )
        usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "你好！"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
        }
        for delta, finish in (({"role": "assistant", "content": "你好"}, None), ({"content": "！"}, "stop")):
            data = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {web.json_response(data).text}\n\n".encode())
        await response.write(
            f"data: {web.json_response({**chunk, 'choices': [], 'usage': usage}).text}\n\n".encode()
        )
        await response.write(b"data: [DONE]\n\n")
        return response


class StandIns:
    """Every platform's stand-in, served from one background event loop."""

    def __init__(self) -> None:
        bases = _documented_bases()
        self.by_region = {
            region: StandIn(region, bases[base_var], f"sk-{region}-test-0123456789", models)
            for region, (_, base_var, models) in PLATFORMS.items()
        }
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> StandIns:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        for stand_in in self.by_region.values():
            runner = web.AppRunner(stand_in.app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            stand_in.port = runner.addresses[0][1]
            self._runners.append(runner)

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def environ(self, tmp_path: Path) -> dict[str, str]:
        """The keys and base URLs a user would export, with each base URL on loopback."""
        env = {"SUANLI_TEST_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"}
        for region, (key_var, base_var, _) in PLATFORMS.items():
            stand_in = self.by_region[region]
            env[key_var] = stand_in.key
            env[base_var] = f"http://127.0.0.1:{stand_in.port}{stand_in.prefix}"
        return env


@pytest.fixture(scope="module")
def stand_ins():
    with StandIns() as running:
        yield running


def test_the_config_offers_each_platform_with_documented_model_names():
    config = load_config(CONFIG, environ={key: "k" for key, _, _ in PLATFORMS.values()})
    assert {r.id for r in config.regions} == set(PLATFORMS)
    for region in config.regions:
        assert region.api_key == "k" and region.provider == "openai"
        assert {o.upstream_name for o in region.models} <= PLATFORMS[region.id][2]
        assert all(o.price.input > 0 and o.price.output > 0 for o in region.models)


def test_every_platform_answers_through_suanli_in_its_documented_shape(stand_ins: StandIns, tmp_path: Path):
    config = load_config(CONFIG, environ=stand_ins.environ(tmp_path))
    config = config.model_copy(
        update={"ledger": config.ledger.model_copy(update={"url": f"sqlite:///{tmp_path / 'ledger.db'}"})}
    )
    with running_proxy(config) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
        for region in config.regions:
            for offer in region.models:
                raw = client.chat.completions.with_raw_response.create(
                    model=f"{region.id}/{offer.name}",
                    messages=[{"role": "user", "content": "你好"}],
                    max_tokens=8,
                )
                assert raw.headers["x-suanli-region"] == region.id
                assert raw.parse().choices[0].message.content == "你好！"
                stand_in = stand_ins.by_region[region.id]
                call = [c for c in stand_in.calls if c["method"] == "POST"][-1]
                assert call["path"] == f"{stand_in.prefix}/chat/completions"
                assert call["auth"] == f"Bearer {stand_in.key}"
                assert call["model"] == offer.upstream_name
        chunks = list(
            client.chat.completions.create(
                model="bailian/qwen3.5-plus", messages=[{"role": "user", "content": "你好"}], stream=True
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "你好！"


def test_config_check_probe_finds_every_platform_fine(stand_ins: StandIns, tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "suanli", "config", "check", "--probe", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **stand_ins.environ(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "probe: 5 of 5 region(s) fine" in result.stdout
    for stand_in in stand_ins.by_region.values():
        assert stand_in.key not in result.stdout + result.stderr
        gets = [c for c in stand_in.calls if c["method"] == "GET"]
        assert gets and gets[-1]["path"] == f"{stand_in.prefix}/models"


def test_a_wrong_key_is_named_by_the_probe(stand_ins: StandIns, tmp_path: Path):
    env = {**os.environ, **stand_ins.environ(tmp_path), "ZHIPUAI_API_KEY": "sk-not-the-zhipu-key"}
    result = subprocess.run(
        [sys.executable, "-m", "suanli", "config", "check", "--probe", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    zhipu = next(
        line for line in result.stdout.splitlines() if line.startswith("│ zhipu") and "bad_key" in line
    )
    assert "401" in zhipu and "sk-not-the-zhipu-key" not in result.stdout
