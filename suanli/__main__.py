"""``python -m suanli ARGS`` is the ``suanli`` command."""

from suanli.router.ops.cli import main

raise SystemExit(main())
