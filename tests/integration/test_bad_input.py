"""Bad input: a 4xx OpenAI-shaped error, never a 500, and the ledger untouched."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.harness import ProxyThread, running_proxy, small_config

VALID = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    config = small_config(tmp_path_factory.mktemp("bad"), max_body_bytes=64 * 1024)
    with running_proxy(config) as running:
        yield running


def _post(
    proxy: ProxyThread, path: str, data: bytes, content_type: str = "application/json"
) -> tuple[int, dict]:
    request = urllib.request.Request(
        proxy.base_url + path, data=data, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _ledger_state(proxy: ProxyThread) -> tuple:
    return proxy.call(lambda r: (r.ledger.balances(), r.ledger.pending_holds(), len(r.ledger.usage())))


BAD = [
    pytest.param(
        b'{"model": "deepseek-flash", "messages": [', "application/json", 400, None, id="malformed-json"
    ),
    pytest.param(
        json.dumps({"messages": VALID["messages"]}).encode(),
        "application/json",
        400,
        "model",
        id="missing-model",
    ),
    pytest.param(
        json.dumps({**VALID, "model": "no-such-model"}).encode(),
        "application/json",
        404,
        "model",
        id="unknown-model",
    ),
    pytest.param(
        json.dumps({**VALID, "max_tokens": -1}).encode(),
        "application/json",
        400,
        "max_tokens",
        id="negative-max-tokens",
    ),
    pytest.param(
        json.dumps({**VALID, "max_tokens": "ten"}).encode(),
        "application/json",
        400,
        "max_tokens",
        id="wrong-typed-field",
    ),
    pytest.param(
        json.dumps({**VALID, "messages": "hi"}).encode(),
        "application/json",
        400,
        "messages",
        id="messages-not-a-list",
    ),
    pytest.param(
        json.dumps({**VALID, "stream": "yes"}).encode(),
        "application/json",
        400,
        "stream",
        id="stream-not-bool",
    ),
    pytest.param(json.dumps(VALID).encode(), "text/plain", 415, None, id="wrong-content-type"),
    pytest.param(json.dumps([VALID]).encode(), "application/json", 400, None, id="body-not-an-object"),
    pytest.param(
        json.dumps({**VALID, "messages": [{"role": "user", "content": "x" * 70000}]}).encode(),
        "application/json",
        413,
        None,
        id="body-over-limit",
    ),
]


@pytest.mark.parametrize(("data", "content_type", "status", "param"), BAD)
def test_bad_input_gets_an_openai_error_and_touches_no_balance(proxy, data, content_type, status, param):
    before = _ledger_state(proxy)
    code, body = _post(proxy, "/chat/completions", data, content_type)
    assert code == status
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    assert _ledger_state(proxy) == before


def test_embeddings_cannot_stream(proxy):
    code, body = _post(
        proxy,
        "/embeddings",
        json.dumps({"model": "text-embedding-v4", "input": "x", "stream": True}).encode(),
    )
    assert code == 400 and body["error"]["param"] == "stream"


def test_unknown_path_is_an_openai_shaped_404(proxy):
    code, body = _post(proxy, "/nothing/here", b"{}")
    assert code == 404 and body["error"]["type"] == "invalid_request_error"
