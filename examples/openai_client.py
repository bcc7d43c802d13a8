"""Use suanli as a drop-in OpenAI endpoint with the official openai SDK.

Start the demo first (`make demo`), then: python examples/openai_client.py [BASE_URL]
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key=os.environ.get("SUANLI_MASTER_KEY", "none"))

    # Interactive chat: stays in the east, within the latency SLO.
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=[{"role": "user", "content": "用一句话介绍武汉。"}], max_tokens=32
    )
    reply = raw.parse()
    print(f"interactive -> {raw.headers['x-suanli-region']} voucher={raw.headers['x-suanli-voucher']} "
          f"cash=¥{raw.headers['x-suanli-cost-yuan']}: {reply.choices[0].message.content[:40]}")

    # Batch work may go west, where compute is cheaper.
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=[{"role": "user", "content": "总结这份报告。"}], max_tokens=32,
        extra_headers={"X-Suanli-Class": "batch"},
    )
    print(f"batch       -> {raw.headers['x-suanli-region']} cash=¥{raw.headers['x-suanli-cost-yuan']}")

    # Streaming works unchanged.
    stream = client.chat.completions.create(
        model="deepseek-flash", messages=[{"role": "user", "content": "你好"}], max_tokens=16, stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    print(f"stream      -> {len(text)} chars, usage {usage.total_tokens if usage else '?'} tokens")

    vectors = client.embeddings.create(model="text-embedding-v4", input=["算力券", "东数西算"])
    print(f"embeddings  -> {len(vectors.data)} vectors of {len(vectors.data[0].embedding)} floats")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1")
