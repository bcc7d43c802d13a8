"""Run the app on a port until interrupted; the demo banner."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Sequence

from aiohttp import web

from suanli.config import Config
from suanli.router.core.router import Router
from suanli.router.errors import ApiError, LedgerError
from suanli.router.http.admin_ops import reload_config
from suanli.router.http.app import ROUTER, create_app
from suanli.router.ledger.url import shown_url

__all__ = ["serve"]


async def serve(
    config: Config,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    master_key: str | None = None,
    banner: bool = False,
    ready: asyncio.Event | None = None,
    config_source: Callable[[], Config] | None = None,
    routes: Sequence[Callable[[web.Application, Router], None]] = (),
) -> None:
    """Serve until SIGINT or SIGTERM, then close cleanly (holds settled or voided); ``ready`` is
    set once the port answers. SIGHUP re-reads the config through ``config_source`` (as
    ``POST /admin/reload``): applied to requests that start from then, or refused and logged."""
    app = create_app(config, master_key=master_key, config_source=config_source, routes=routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # What start-up built (config, tokenizer, OR-Tools) lives as long as the process: frozen, it
    # is skipped by full garbage collections, which would otherwise hold the GIL for tens of ms,
    # stalling the event loop whenever the re-planner's thread triggers one.
    gc.freeze()
    # The signals are ours before the port is announced: a SIGHUP sent on seeing the banner reloads.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task] = set()

    def hangup() -> None:
        task = loop.create_task(_reload(app, config_source))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    base = f"http://{host}:{port}/v1"
    print(
        _banner(base, app[ROUTER].config, master_key) if banner
        else f"suanli serving on {base} (ledger {shown_url(config.ledger.url)})",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def _reload(app: web.Application, source: Callable[[], Config] | None) -> None:
    """SIGHUP: what POST /admin/reload does, its answer printed (a refusal too: the old config stays)."""
    try:
        changes = await reload_config(app[ROUTER], source)
    except ApiError as exc:
        print(f"suanli: reload refused: {exc.message}", flush=True)
        return
    except LedgerError as exc:  # the ledger could not take the new vouchers: nothing was switched
        print(f"suanli: reload failed: {exc}", flush=True)
        return
    shown = {name: value for name, value in changes.items() if value and name != "changed"}
    print(f"suanli: config reloaded: {shown or 'no changes'}", flush=True)


def _banner(base: str, config: Config, master_key: str | None) -> str:
    key = master_key or "none"
    regions = ", ".join(f"{r.id} ({r.zone})" for r in config.regions)
    model = config.model_names()[0] if config.model_names() else "MODEL"
    slo = config.classes.interactive.latency_slo_ms
    return f"""
suanli demo: {len(config.regions)} simulated city platforms behind one OpenAI-compatible endpoint
  regions:  {regions}
  base URL: {base}
  ledger:   {shown_url(config.ledger.url)}

Try it with curl:
  curl -s {base}/chat/completions -H 'Content-Type: application/json' -H 'Authorization: Bearer {key}' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "你好"}}]}}' -D - | grep -i x-suanli

Or with the openai SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{key}")
  reply = client.chat.completions.with_raw_response.create(
      model="{model}", messages=[{{"role": "user", "content": "你好"}}])
  print(reply.headers["x-suanli-region"], reply.parse().choices[0].message.content)

Interactive work stays within the {slo:g} ms first-token SLO; mark work that may
travel with -H 'X-Suanli-Class: batch'.
Demo traffic (interactive, batch, a fine-tuning job): suanli demo --traffic, or in another terminal
  suanli traffic --url {base[:-3]}
Watch it: suanli monitor --url {base[:-3]}    Balances: suanli vouchers --url {base[:-3]}
{_activate_hint()}Press Ctrl-C to stop.
"""


def _activate_hint() -> str:
    """The line that puts this ``suanli`` on a new terminal's PATH, when it is not there already."""
    import shutil
    import sys
    from pathlib import Path

    mine = Path(sys.prefix) / "bin" / "suanli"
    found = shutil.which("suanli")
    if sys.prefix == sys.base_prefix or (found and Path(found).resolve() == mine.resolve()):
        return ""
    return f"(in a new terminal, first: source {Path(sys.prefix) / 'bin' / 'activate'})\n"
