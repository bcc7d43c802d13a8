"""Shared fixtures: keep litellm offline and tests on loopback."""

from __future__ import annotations

import os
import signal

# Tests stop the commands they start with SIGINT, as a user's Ctrl-C does. A shell that runs
# the suite as a background job (no job control) starts it with SIGINT ignored, which every
# child would inherit: the commands would then never stop. A handler here is reset to the
# default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.pop("SUANLI_MASTER_KEY", None)
for proxy_var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(proxy_var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

from tests.backends import ledger_opts  # noqa: E402, F401 - the both-backends fixture, for every test
