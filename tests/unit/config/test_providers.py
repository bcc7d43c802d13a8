"""The provider names a config accepts are litellm's own, plus openai and sim."""

from __future__ import annotations

import os

from suanli.config.providers import LITELLM_PROVIDERS, provider_problem


def test_the_copy_matches_the_installed_litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    from litellm.types.utils import LlmProviders

    installed = {p.value for p in LlmProviders}
    assert LITELLM_PROVIDERS == installed, (
        "litellm's providers changed (constraints.txt refreshed?): update config/providers.py: "
        f"added {sorted(installed - LITELLM_PROVIDERS)}, gone {sorted(LITELLM_PROVIDERS - installed)}"
    )


def test_the_platforms_of_the_readme_are_known():
    for name in ("openai", "sim", "deepseek", "dashscope", "volcengine", "zai", "moonshot", "bigmodel"):
        assert provider_problem(name) is None
    assert "did you mean 'dashscope'" in (provider_problem("dashcope") or "")
