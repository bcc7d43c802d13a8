"""A minimal OpenAI-compatible upstream for benchmarks: raw HTTP/1.1 on asyncio, keep-alive.

    .venv/bin/python benchmarks/_upstream.py --port 9001 [--delay-ms 20]

Answers ``POST .../chat/completions`` with a fixed completion (with usage) after ``--delay-ms``,
or, when the body asks ``"stream": true``, with 8 SSE content chunks, a usage chunk and
``[DONE]`` (chunked transfer encoding; the delay comes before the first byte). A model name
ending ``-dMS`` (``bench-d20``) sets the delay for that request instead, so one upstream serves
every delay of a run. A model name ``hold-S`` streams one chunk per second for S seconds (the
open-streams memory check).
``GET .../models`` answers a model list (the readiness probe). Runs on uvloop when installed.
It does as little work as an HTTP server can, so that "direct" is a floor for every proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

_CONTENT = "东数西算是把东部的算力需求引导到西部。"
_USAGE = {"prompt_tokens": 24, "completion_tokens": 16, "total_tokens": 40}


def _completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _CONTENT},
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    )


def _event(model: str, delta: dict, *, finish: str | None = None, usage: dict | None = None) -> bytes:
    data: dict = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        data["usage"] = usage
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_MODELS = _response(
    "200 OK", b"application/json", b'{"object":"list","data":[{"id":"bench","object":"model"}]}'
)
_NOT_FOUND = _response("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')


class _Http(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order."""

    def __init__(self, delay_s: float, cache: dict[tuple[str, bool], bytes]) -> None:
        self._delay_s = delay_s
        self._cache = cache  # (model, stream) -> the whole answer as bytes
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next()

    def _next(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self._buffer) < end + 4 + length:
            return
        body = self._buffer[end + 4 : end + 4 + length]
        self._buffer = self._buffer[end + 4 + length :]
        method, path = head.split(" ", 2)[:2]
        self._busy = True
        if method == "GET" and path.rstrip("/").endswith("/models"):
            self._send(_MODELS)
        elif method == "POST" and path.endswith("/completions"):
            request = orjson.loads(body)
            model, stream = str(request.get("model", "bench")), bool(request.get("stream"))
            if model.startswith("hold-"):
                asyncio.ensure_future(self._hold(model, float(model[5:])))
                return
            answer = self._cache.get((model, stream))
            if answer is None:
                answer = self._cache[(model, stream)] = _stream(model) if stream else _response(
                    "200 OK", b"application/json", _completion(model)
                )
            delay_s = _delay_of(model, self._delay_s)
            if delay_s:
                asyncio.get_running_loop().call_later(delay_s, self._send, answer)
            else:
                self._send(answer)
        else:
            self._send(_NOT_FOUND)

    def _send(self, answer: bytes) -> None:
        if self._transport is not None:
            self._transport.write(answer)
        self._busy = False
        if self._buffer:
            self._next()

    async def _hold(self, model: str, seconds: float) -> None:
        """A stream kept open for ``seconds``: one content chunk a second, then usage and [DONE]."""
        if self._transport is None:
            return
        self._transport.write(_STREAM_HEAD)
        deadline = time.monotonic() + seconds
        while self._transport is not None:
            self._transport.write(_chunk(_event(model, {"content": "算"})))
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        tail = _chunk(_event(model, {}, usage=_USAGE)) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self._send(tail)


def _delay_of(model: str, default_s: float) -> float:
    head, sep, tail = model.rpartition("-d")
    if sep and head and tail.isdigit():
        return int(tail) / 1000
    return default_s


def _stream(model: str) -> bytes:
    events = [_event(model, {"role": "assistant", "content": ""})]
    events += [_event(model, {"content": _CONTENT[i : i + 3]}) for i in range(0, 24, 3)]
    events += [_event(model, {}, finish="stop"), _event(model, {}, usage=_USAGE), b"data: [DONE]\n\n"]
    return _STREAM_HEAD + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n"


async def _serve(host: str, port: int, delay_ms: float) -> None:
    cache: dict[tuple[str, bool], bytes] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(delay_ms / 1000, cache), host, port, backlog=4096)
    print(f"upstream on http://{host}:{port}/v1 delay {delay_ms:g} ms", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.host, args.port, args.delay_ms))
    else:
        uvloop.run(_serve(args.host, args.port, args.delay_ms))


if __name__ == "__main__":
    main()
