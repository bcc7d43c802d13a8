"""Which ledger a reading command (vouchers, report, audit) opens: said aloud, never invented.

A config file keeps its SQLite ledger in its own folder (a relative ``ledger.url`` is resolved
there by the loader), the bundled catalog in ``$XDG_DATA_HOME/suanli``. A command that only
reads refuses a ledger file that does not exist, instead of creating an empty one and
reporting zeros.
"""

from __future__ import annotations

import sys
from pathlib import Path

from suanli.config import Config
from suanli.config.loader import catalog_home
from suanli.router.ledger.url import is_pg_url, shown_url

__all__ = ["reading_ledger"]


def reading_ledger(config: Config, *, command: str, config_path: str | None) -> str:
    """The ledger URL ``command`` reads; says which on stderr, exits 2 when the file is missing."""
    import os

    url = config.ledger.url
    home = catalog_home(os.environ)
    where = f"config {config_path}" if config_path else f"the bundled catalog, kept in {home}"
    if not is_pg_url(url):
        from suanli.router.ledger.sqlite.schema import sqlite_path

        try:
            path, _ = sqlite_path(url)
        except ValueError as exc:
            print(f"suanli {command}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if path not in ("", ":memory:") and not Path(path).is_file():
            print(
                f"suanli {command}: no ledger at {path} (the ledger of {where}).\n"
                "  Nothing has been served on that config yet: start `suanli serve --config FILE` on it,\n"
                "  pass --config FILE for the config the server runs on, or ask a running server"
                " (suanli vouchers --url http://127.0.0.1:8080).",
                file=sys.stderr,
            )
            raise SystemExit(2)
    print(f"suanli {command}: reading ledger {shown_url(url)} ({where})", file=sys.stderr)
    return url
