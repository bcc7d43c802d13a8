"""Input that used to answer 500: each gets an OpenAI-shaped 4xx, touches no balance, leaves no file behind.

Raw HTTP over a socket, because the clients a test would use refuse to send most of it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.harness import ProxyThread, running_proxy, small_config

MASTER = "sk-hostile-master"
CHAT = b'{"model":"deepseek-flash","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    with running_proxy(small_config(tmp_path_factory.mktemp("hostile")), master_key=MASTER) as running:
        yield running


def _send(
    proxy: ProxyThread, method: str, path: str, body: bytes = b"", headers: bytes = b""
) -> tuple[int, dict]:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(head + headers + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _state(proxy: ProxyThread) -> tuple:
    return proxy.call(lambda r: (r.ledger.balances(), r.ledger.pending_holds(), len(r.ledger.usage())))


def _assert_error(status: int, body: dict, expected: int, param: str | None = None) -> None:
    assert status == expected, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param


JSON = b"Content-Type: application/json\r\n"


def test_json_nested_past_what_can_be_forwarded_is_400(proxy):
    before = _state(proxy)
    deep = b"[" * 300 + b"]" * 300
    body = CHAT.replace(b'"hi"', deep)
    _assert_error(*_send(proxy, "POST", "/v1/chat/completions", body, JSON), 400)
    batch = b'{"input_file_id":"f","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":' \
        + b'{"a":' * 300 + b"1" + b"}" * 301
    _assert_error(*_send(proxy, "POST", "/v1/batches", batch, JSON), 400)
    assert _state(proxy) == before


def test_invalid_utf8_request_id_is_400(proxy):
    before = _state(proxy)
    status, body = _send(proxy, "POST", "/v1/chat/completions", CHAT, JSON + b"X-Request-Id: \xff\xfeab\r\n")
    _assert_error(status, body, 400, "X-Request-Id")
    assert _state(proxy) == before


def _multipart(*parts: bytes) -> tuple[bytes, bytes]:
    body = b"".join(b"--BND\r\n" + part + b"\r\n" for part in parts) + b"--BND--\r\n"
    return body, b"Content-Type: multipart/form-data; boundary=BND\r\n"


PURPOSE = b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch'
CHAT_BODY = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]}
LINE = json.dumps(
    {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": CHAT_BODY}
).encode()


def _file_part(name: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="file"; filename="' + name + b'"\r\n\r\n' + LINE + b"\n"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(*_multipart(PURPOSE, _file_part(b"a\x00.jsonl")), id="nul-in-part-header"),
        pytest.param(b"--BND\r\n" + PURPOSE + b"\r\n--BND\r\nContent-Dispo",
                     b"Content-Type: multipart/form-data; boundary=BND\r\n", id="cut-part-header"),
        pytest.param(b"no boundary here", b"Content-Type: multipart/form-data; boundary=BND\r\n",
                     id="no-boundary"),
        pytest.param(b"abc", b"Content-Type: multipart/form-data\r\n", id="boundary-missing"),
        pytest.param(*_multipart(PURPOSE, _file_part(b"a.jsonl"), _file_part(b"b.jsonl")),
                     id="two-file-parts"),
    ],
)
def test_malformed_multipart_upload_is_400_and_leaves_no_file(proxy, body: bytes, headers: bytes):
    files_dir = Path(proxy.config.ledger.url.removeprefix("sqlite:///")).parent  # data beside the ledger
    before = sorted(p.name for p in files_dir.rglob("file-*"))
    _assert_error(*_send(proxy, "POST", "/v1/files", body, headers), 400)
    assert sorted(p.name for p in files_dir.rglob("file-*")) == before
    assert not list(files_dir.rglob("*.part"))


def test_absurd_admin_values_are_400(proxy):
    huge = b'{"name": "x", "budget_yuan_per_day": 1e308}'
    _assert_error(*_send(proxy, "POST", "/admin/keys", huge, JSON), 400, "budget_yuan_per_day")
    status, body = _send(proxy, "GET", "/admin/usage.csv?from=2026-01-01&to=9999-12-31")
    _assert_error(status, body, 400, "from/to")


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "n", 129),
        ("/v1/chat/completions", "max_tokens", 10**9),
        ("/v1/chat/completions", "max_completion_tokens", 131_073),
        ("/v1/completions", "best_of", 21),
        ("/v1/embeddings", "dimensions", 100_000),
    ],
)
def test_out_of_bounds_parameters_are_400_naming_the_param(proxy, path: str, field: str, value: int):
    base = {
        "/v1/chat/completions": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]},
        "/v1/completions": {"model": "deepseek-flash", "prompt": "hi"},
        "/v1/embeddings": {"model": "text-embedding-v4", "input": "hi"},
    }[path]
    before = _state(proxy)
    status, body = _send(proxy, "POST", path, json.dumps({**base, field: value}).encode(), JSON)
    _assert_error(status, body, 400, field)
    assert "at most" in body["error"]["message"]
    assert _state(proxy) == before
