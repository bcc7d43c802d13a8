"""Embed suanli in your own asyncio app: no HTTP server of ours, same routing and ledger.

python examples/embedded_router.py [CONFIG]   (default: the bundled catalog, simulated platforms)
"""

from __future__ import annotations

import asyncio
import sys

from suanli.router import Router
from suanli.router.core.router import RequestContext


async def main(config: str | None) -> None:
    source = config or _bundled_with_local_ledger()
    async with Router.from_config(source) as router:
        answer = await router.chat_completions(
            model="deepseek-flash",
            messages=[{"role": "user", "content": "西部算力为什么便宜？"}],
            max_tokens=24,
        )
        r = answer.routing
        print(f"{r.region} voucher={r.voucher} cash=¥{r.cash_yuan:.6f} attempts={r.attempts}")
        print(answer.json()["choices"][0]["message"]["content"])

        stream = await router.chat_completions(
            model="deepseek-flash", messages=[{"role": "user", "content": "你好"}], max_tokens=8, stream=True,
            context=RequestContext(work_class="batch"),
        )
        async with stream:
            pieces = [c["choices"][0]["delta"].get("content") or "" async for c in stream if c.get("choices")]
        routing = stream.routing
        print(f"batch stream via {routing.region}: {''.join(pieces)!r}, cost ¥{routing.cost_yuan:.6f}")
        print("balances:", {k: round(v, 4) for k, v in router.balances().items()})


def _bundled_with_local_ledger() -> dict:
    import yaml

    from suanli.config import catalog_text

    data = yaml.safe_load(catalog_text())
    data["ledger"] = {"url": "sqlite:///suanli-embedded.db"}
    return data


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
