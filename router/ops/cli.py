"""The ``suanli`` command line: serve, demo, sim, simulate, vouchers, config check."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from suanli.config import Config, ConfigError, load_catalog, load_config
from suanli.router.errors import LedgerError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``suanli`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=os.environ.get("SUANLI_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"config error in {exc.source}:", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path or '<root>'}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        port = getattr(args, "port", None)
        print(f"suanli: port {port} on {getattr(args, 'host', '')} is already in use (another suanli?):"
              f" stop it, or pick another port with --port", file=sys.stderr)
        return 1
    except LedgerError as exc:  # e.g. a ledger on a disk too full to start on: say so, no traceback
        print(f"suanli: ledger error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suanli", description="Multi-region compute arbitrage router")
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the OpenAI-compatible proxy")
    serve.add_argument("--config", help="config YAML (default: the bundled catalog)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="simulated city platforms plus the proxy on the bundled catalog")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--traffic", action="store_true", help="also send its own mixed demo traffic")
    demo.add_argument("--minutes", type=float, default=5.0, help="how long --traffic runs (default 5)")
    demo.set_defaults(func=_demo)

    traffic = sub.add_parser("traffic", help="send mixed demo traffic to a running proxy")
    traffic.add_argument("--url", default=os.environ.get("SUANLI_URL", "http://127.0.0.1:8080"),
                         help="the proxy (default: $SUANLI_URL, else the demo's %(default)s)")
    traffic.add_argument("--key", help="API key (default: $SUANLI_MASTER_KEY)")
    traffic.add_argument("--config", help="its config, for the zones (default: the bundled catalog)")
    traffic.add_argument("--minutes", type=float, default=5.0)
    traffic.add_argument("--clients", type=int, default=6)
    traffic.set_defaults(func=_traffic)

    sim = sub.add_parser("sim", help="run a fleet of simulated city platforms")
    sim.add_argument("--config", help="config YAML (default: the bundled catalog)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9100, help="port of the first region; the rest follow")
    sim.set_defaults(func=_sim)

    vouchers = sub.add_parser(
        "vouchers", help="voucher balances, expiry and burn; `vouchers clear REGION|VOUCHER` after a top-up")
    vouchers.add_argument("--config", help="config YAML whose ledger to read (default: the bundled catalog)")
    vouchers.add_argument("--url", help="ask a running server instead, e.g. http://127.0.0.1:8080")
    vouchers.add_argument("--key", help="master key for --url (default: $SUANLI_MASTER_KEY)")
    vouchers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    vouchers.set_defaults(func=_vouchers)

    from suanli.router.ops import reconcile_cli

    actions = vouchers.add_subparsers(metavar="ACTION")
    reconcile_cli.add_parsers(sub, actions)  # reconcile, vouchers set-balance
    clear = actions.add_parser(
        "clear", help="draw again on a region's cash (and its vouchers) or a voucher a 402 marked exhausted"
    )
    clear.add_argument("target", help="the region or voucher id to clear")
    clear.add_argument("--config", help="config YAML whose ledger to write (default: the bundled catalog)")
    clear.add_argument("--url", help="ask a running server instead, e.g. http://127.0.0.1:8080")
    clear.add_argument("--key", help="master key for --url (default: $SUANLI_MASTER_KEY)")
    clear.set_defaults(func=_clear)
    from suanli.router.ops import adjust_cli

    adjust_cli.add_parser(actions)  # vouchers adjust ID AMOUNT --reason WHY

    config = sub.add_parser("config", help="config tools")
    config_sub = config.add_subparsers(metavar="ACTION")
    from suanli.router.ops import config_check

    config_check.add_parser(config_sub)  # check [--probe]

    from suanli.router.ops.status_cli import add_parsers as add_status_parsers

    add_status_parsers(sub)  # monitor, report

    from suanli.router.ops import audit_cli
    from suanli.router.simulate import cli as simulate

    simulate.add_parser(sub)
    audit_cli.add_parser(sub)
    from suanli.router.ops import advice_cli, whatif_cli

    whatif_cli.add_parsers(sub)  # trace export, whatif
    advice_cli.add_parsers(sub)  # value, advise
    return parser


def _load(path: str | None) -> Config:
    return load_config(path) if path else load_catalog()


def _master_key(args: argparse.Namespace) -> str | None:
    return getattr(args, "key", None) or os.environ.get("SUANLI_MASTER_KEY") or None


def _serve(args: argparse.Namespace) -> int:
    one_malloc_arena()
    from suanli.router.http.server import serve
    from suanli.router.ops.whatif_route import add_whatif_route

    _run_async(serve(_load(args.config), host=args.host, port=args.port, master_key=_master_key(args),
                     config_source=lambda: _load(args.config), routes=(add_whatif_route,)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    one_malloc_arena()
    from suanli.router.http.server import serve

    # A demo starts from full vouchers: its ledger and files live in a fresh folder (printed in
    # the banner), not in the current one, unless SUANLI_LEDGER_URL says where.
    environ = dict(os.environ)
    if not environ.get("SUANLI_LEDGER_URL"):
        folder = Path(tempfile.mkdtemp(prefix="suanli-demo-"))
        environ["SUANLI_LEDGER_URL"] = f"sqlite:///{folder / 'suanli.db'}"
    config = load_catalog(environ=environ)
    key = _master_key(args)
    from suanli.router.ops.whatif_route import add_whatif_route  # GET /admin/whatif

    async def run() -> None:
        ready = asyncio.Event()
        server = asyncio.create_task(
            serve(config, host=args.host, port=args.port, master_key=key, banner=True, ready=ready,
                  config_source=lambda: load_catalog(environ=environ), routes=(add_whatif_route,))
        )
        if args.traffic:
            await ready.wait()
            from suanli.router.ops.traffic import run_traffic

            await run_traffic(f"http://{args.host}:{args.port}/v1", seconds=args.minutes * 60, key=key,
                              east=_east(config))
            print("demo traffic done; the proxy keeps serving (Ctrl-C stops it)", flush=True)
        await server

    _run_async(run())
    return 0


def _east(config: Config) -> frozenset[str]:
    return frozenset(r.id for r in config.regions if r.zone == "east")


def _traffic(args: argparse.Namespace) -> int:
    from suanli.router.ops.traffic import run_traffic

    base = args.url.rstrip("/")
    base = base if base.endswith("/v1") else f"{base}/v1"
    stats = asyncio.run(run_traffic(base, clients=args.clients, seconds=args.minutes * 60,
                                    key=_master_key(args), east=_east(_load(args.config))))
    print(stats.line())
    return 0


def _sim(args: argparse.Namespace) -> int:
    from suanli.providers.sim import run_fleet_forever

    asyncio.run(run_fleet_forever(_load(args.config), host=args.host, base_port=args.port))
    return 0


def one_malloc_arena() -> None:
    """Make glibc's malloc keep one arena for every thread (as ``MALLOC_ARENA_MAX=1``).

    The server's threads (re-planner, resolver, tokenizer load) would each get an arena of
    their own, a few MB of idle RSS, to save lock contention the event loop does not have.
    Call before the first thread starts; an operator's MALLOC_ARENA_MAX wins; not glibc: no-op.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (the fast extra), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _console():
    from rich.console import Console

    console = Console()
    # Piped output has no width of its own; rich would squeeze tables into 80 columns.
    return console if console.is_terminal else Console(width=160)


def _clear(args: argparse.Namespace) -> int:
    from suanli.router.ops.exhausted_cli import clear

    config = None if args.url else _load(args.config)
    return clear(args.target, url=args.url, key=_master_key(args), config=config)


def _vouchers(args: argparse.Namespace) -> int:
    from suanli.router.ops.reports import voucher_table

    if args.url:
        rows = _fetch_vouchers(args.url, _master_key(args))
        if rows is None:
            return 1
    else:
        from suanli.router.core.router import voucher_dict
        from suanli.router.ledger.port import read_vouchers
        from suanli.router.ops.ledger_cli import reading_ledger

        config = _load(args.config)
        reading_ledger(config, command="vouchers", config_path=args.config)
        from suanli.router.ledger.packages import ledger_vouchers

        vouchers = ledger_vouchers(config, datetime.now(UTC))  # a package: one voucher per period
        rows = [voucher_dict(status) for status in read_vouchers(config.ledger, vouchers)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _console().print(voucher_table(rows, now=datetime.now(UTC)))
    return 0


def _fetch_vouchers(url: str, key: str | None) -> list[dict] | None:
    request = urllib.request.Request(url.rstrip("/") + "/admin/vouchers")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["data"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        print(f"{url} answered {exc.code}: {detail}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {url}: {exc}", file=sys.stderr)
    return None


if __name__ == "__main__":
    sys.exit(main())
