"""The bundled programmes catalog: strict, sourced, estimates marked."""

from __future__ import annotations

import pytest
import yaml

from suanli.config import ConfigError
from suanli.config.programmes import Figure, load_programmes, parse_programmes, programmes_text


def _figures(node: object) -> list[dict]:
    found = []
    if isinstance(node, dict):
        if "value" in node and "tag" in node:
            found.append(node)
        for child in node.values():
            found += _figures(child)
    elif isinstance(node, list):
        for child in node:
            found += _figures(child)
    return found


def test_the_bundled_catalog_names_the_seeds_programmes_with_their_thresholds() -> None:
    catalog = load_programmes()
    spend = {p.id: p.eligibility.min_annual_spend_yuan for p in catalog.programmes}
    assert spend["wuhan-municipal"].value == 200_000
    assert spend["qingyang-compute"].value == 500_000
    assert spend["guiyang-compute"].value == 100_000
    model = catalog.get("shanghai-model-2025")
    assert model.gives.rate.value == 0.5 and model.gives.cap_yuan.value == 5_000_000
    assert catalog.get("guiyang-compute").lead_time_weeks[1].value == 2


def test_every_number_carries_a_source_and_estimates_say_why() -> None:
    raw = yaml.safe_load(programmes_text())
    figures = _figures(raw)
    assert len(figures) >= 25
    for figure in figures:
        assert figure["source"].strip()
        if figure["tag"] == "E":
            assert figure["source"] == "estimate" and figure.get("note"), figure


def test_a_number_without_a_source_or_an_unknown_key_is_refused() -> None:
    raw = yaml.safe_load(programmes_text())
    raw["programmes"][0]["gives"]["rate"] = {"value": 0.3, "tag": "S"}
    with pytest.raises(ConfigError) as caught:
        parse_programmes(raw)
    assert any("programmes[0].gives.rate.source" in path for path, _ in caught.value.problems)
    raw = yaml.safe_load(programmes_text())
    raw["programmes"][1]["min_spend"] = 1
    with pytest.raises(ConfigError):
        parse_programmes(raw)


def test_an_estimate_is_marked() -> None:
    assert Figure(value=0.3, tag="E", source="estimate").estimate
    assert not Figure(value=0.3, tag="U", source="seed 001").estimate
