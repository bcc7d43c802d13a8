"""A closed-loop HTTP/1.1 load generator for benchmarks: raw asyncio, keep-alive, one process.

    .venv/bin/python benchmarks/_loadgen.py --url http://127.0.0.1:8080/v1/chat/completions \
        --model m0 --concurrency 16 --seconds 3 [--stream] [--warmup 0.5]
    .venv/bin/python benchmarks/_loadgen.py --url ... --model hold-10 --hold 1000

``--concurrency`` connections each send one request, wait for the whole answer (Content-Length
or chunked), and send the next, until ``--seconds`` have passed; answers that started before
then are awaited. Prints ``{"phase": "measure"}`` after the warm-up and ``{"phase": "done"}``
after the measured window (so the caller can read the server's CPU clock around it), then one
JSON object: requests, seconds, req_s, p50_ms, p99_ms, errors.
``--hold N`` instead opens N streamed requests at once, prints ``{"held": N}`` when every one
has its first bytes, and exits when they have all ended. 127.0.0.1 only; uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import orjson


class _Conn(asyncio.Protocol):
    """One keep-alive connection that parses answers (Content-Length or chunked)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._done: asyncio.Future[int] | None = None
        self._first: asyncio.Future[None] | None = None
        self._status = 0
        self._length: int | None = None  # body bytes still expected; None while in the head
        self._chunked = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for future in (self._done, self._first):
            if future is not None and not future.done():
                future.set_exception(ConnectionError("connection lost"))

    def request(self, payload: bytes) -> tuple[asyncio.Future[int], asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        self._done, self._first = loop.create_future(), loop.create_future()
        self._status, self._length, self._chunked = 0, None, False
        assert self.transport is not None
        self.transport.write(payload)
        return self._done, self._first

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        if self._length is None and not self._chunked:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            self._status = int(head[0].split(" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self._length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self._chunked = True
            del buf[: end + 4]
            if self._length is None and not self._chunked:
                self._length = 0
        if self._chunked:
            while True:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buf[:line_end]).split(b";")[0], 16)
                if size == 0:
                    if buf.find(b"\r\n", line_end + 2) < 0:
                        return
                    del buf[: buf.find(b"\r\n", line_end + 2) + 2]
                    self._finish()
                    return
                if len(buf) < line_end + 2 + size + 2:
                    return
                del buf[: line_end + 2 + size + 2]
        elif self._length is not None and len(buf) >= self._length:
            del buf[: self._length]
            self._finish()

    def _finish(self) -> None:
        done = self._done
        self._length, self._chunked = None, False
        if done is not None and not done.done():
            done.set_result(self._status)


def _payload(url: str, model: str, stream: bool, key: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    body = orjson.dumps(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "东数西算是什么？请用一句话回答。"},
            ],
            "max_tokens": 64,
            "stream": stream,
        }
    )
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + body


async def _connect(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_Conn, host, port)
    return conn


async def _closed_loop(args: argparse.Namespace) -> dict:
    host, port, payload = _payload(args.url, args.model, args.stream, args.key)
    conns = [await _connect(host, port) for _ in range(args.concurrency)]
    latencies: list[float] = []
    errors = 0

    async def worker(conn: _Conn, until: float, record: bool) -> None:
        nonlocal errors
        while time.perf_counter() < until and not conn.lost:
            started = time.perf_counter()
            done, _ = conn.request(payload)
            try:
                status = await done
            except ConnectionError:
                errors += 1
                return
            if record:
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    if args.warmup > 0:
        until = time.perf_counter() + args.warmup
        await asyncio.gather(*(worker(c, until, False) for c in conns))
    # The phase lines let the caller read the server's CPU clock around the measured window only.
    print(json.dumps({"phase": "measure"}), flush=True)
    started = time.perf_counter()
    until = started + args.seconds
    await asyncio.gather(*(worker(c, until, True) for c in conns))
    elapsed = time.perf_counter() - started
    print(json.dumps({"phase": "done"}), flush=True)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else None

    return {
        "requests": len(ordered),
        "seconds": elapsed,
        "req_s": len(ordered) / elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


async def _hold(args: argparse.Namespace) -> dict:
    host, port, payload = _payload(args.url, args.model, True, args.key)
    conns = await asyncio.gather(*(_connect(host, port) for _ in range(args.hold)))
    requests = [conn.request(payload) for conn in conns]
    await asyncio.gather(*(first for _, first in requests))
    print(json.dumps({"held": len(conns)}), flush=True)
    statuses = await asyncio.gather(*(done for done, _ in requests), return_exceptions=True)
    ok = sum(1 for s in statuses if s == 200)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return {"requests": ok, "errors": len(statuses) - ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--key", default="sk-bench", help="sent as Authorization: Bearer KEY")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--hold", type=int, default=0, help="hold this many streams open at once")
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
        parser.error("the load generator only targets 127.0.0.1")
    run = _hold if args.hold else _closed_loop
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
