"""Micro-benchmark of the reference tokenizer on the request path: microseconds per count.

    .venv/bin/python benchmarks/tokenizer.py [--n 2000]

Rows: a 2 KB mixed Chinese/English chat message, a 200-byte one, and a 16 KB prompt,
each counted with ``count_message_tokens`` (the estimate every hold is sized from).
The target is well under a millisecond for 2 KB; it lives here, not in a timed test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suanli.providers.tokenizer import count_message_tokens, load_tokenizer  # noqa: E402

_SAMPLE = "你好，世界！这是一个测试。The quick brown fox jumps over the lazy dog. "


def _message(size: int) -> list[dict]:
    text = (_SAMPLE * (size // len(_SAMPLE.encode()) + 1)).encode()[:size].decode("utf-8", "ignore")
    return [{"role": "user", "content": text}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="counts per row")
    args = parser.parse_args()
    started = time.perf_counter()
    load_tokenizer()
    print(f"tokenizer load: {(time.perf_counter() - started) * 1000:.0f} ms")
    print(f"{'message':>10}  {'tokens':>7}  {'p50 us':>8}  {'p99 us':>8}")
    for size in (200, 2048, 16384):
        messages = _message(size)
        tokens = count_message_tokens(messages)
        samples = []
        for _ in range(args.n):
            t0 = time.perf_counter_ns()
            count_message_tokens(messages)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        p99 = samples[int(len(samples) * 0.99) - 1]
        print(f"{size:>9}B  {tokens:>7}  {statistics.median(samples):>8.1f}  {p99:>8.1f}")


if __name__ == "__main__":
    main()
