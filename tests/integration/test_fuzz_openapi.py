"""Fuzzing the OpenAI operations suanli serves with schemathesis, from OpenAI's own OpenAPI spec.

Every case, valid or not (positive and negative generation), must get no 500, and every error
must be OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``. Bounded to a few
hundred cases in the suite (``SUANLI_FUZZ_EXAMPLES`` per operation, default 16); the longer run
is ``python benchmarks/fuzz.py`` (README, "Fuzzing"). The spec lives beside the repository in
``tests/data/openai-openapi`` (or ``SUANLI_OPENAPI``); without it the test is skipped.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.harness import running_proxy, small_config  # noqa: E402

# OpenAI's spec (MIT), kept in the repository so a fresh clone fuzzes with it
_KEPT = Path(__file__).parents[1] / "data/openai-openapi/openapi.yaml"
SPEC = Path(os.environ.get("SUANLI_OPENAPI") or _KEPT)
EXAMPLES = int(os.environ.get("SUANLI_FUZZ_EXAMPLES", "16"))
REPORT = os.environ.get("SUANLI_FUZZ_REPORT")  # a JSON summary of the run is written here
LONG = os.environ.get("SUANLI_FUZZ_LONG") == "1"  # every phase, random (benchmarks/fuzz.py)
MASTER = "sk-fuzz-master"

# The operations suanli serves (router/http), as (method, path regex) of the spec.
SERVED = (
    r"^/(chat/completions|completions|embeddings|models(/\{model\})?|files(/\{file_id\}(/content)?)?"
    r"|batches(/\{batch_id\}(/cancel)?)?|fine_tuning/jobs(/\{fine_tuning_job_id\}(/cancel|/events)?)?)$"
)
_SKIP = {("DELETE", "/models/{model}"), ("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/pause")}

if not SPEC.is_file():
    pytest.skip(f"no OpenAI OpenAPI spec at {SPEC} (set SUANLI_OPENAPI)", allow_module_level=True)

schema = schemathesis.openapi.from_path(SPEC).include(path_regex=SERVED)
schema = schema.exclude(func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in _SKIP)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True)
if not LONG:  # the coverage phase alone is thousands of cases: the long run's, not the suite's
    schema.config.phases.update(phases=["examples", "fuzzing"])

OUTCOMES: Counter[str] = Counter()  # "status" or "500 METHOD PATH" -> count


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory):
    config = small_config(tmp_path_factory.mktemp("fuzz"), max_body_bytes=256 * 1024)
    with running_proxy(config, master_key=MASTER) as running:
        yield running
    if REPORT:
        cases = sum(v for k, v in OUTCOMES.items() if k.isdigit())
        Path(REPORT).write_text(json.dumps({"cases": cases, "outcomes": dict(OUTCOMES)}, indent=1))


def _aim(case) -> None:
    """Half the bodies naming a model get one we serve, so cases reach routing, holds and the sims."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str) and zlib.crc32(repr(body).encode()) % 2:
        body["model"] = "text-embedding-v4" if case.path == "/embeddings" else "deepseek-flash"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,  # the suite's cases are the same every run
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_500_and_openai_shaped_errors(case, proxy):
    _aim(case)
    response = case.call(
        base_url=proxy.base_url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30
    )
    status = response.status_code
    OUTCOMES[str(status)] += 1
    OUTCOMES[f"{status} {case.method} {case.path}"] += 1
    where = f"{case.method} {case.path}"
    if status == 500:
        OUTCOMES[f"500 {where}"] += 1
    assert status != 500, f"{where}: 500 for {case.body!r:.500} -> {response.text[:500]}"
    if status >= 400:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, (where, response.text[:300])
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, (where, error)
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
