"""The body's ``suanli`` object: parsed strictly, 400 naming the field; a request never widens its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from suanli.optimizer import Ask
from suanli.router.core.context import RequestContext
from suanli.router.core.controls import Controls, narrowed, parse_controls, with_deadline
from suanli.router.errors import BadRequestError, PermissionDeniedError
from tests.harness import small_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return small_config(Path(tmp_path_factory.mktemp("controls")))


def _param(config, raw) -> str | None:
    with pytest.raises(BadRequestError) as caught:
        parse_controls(config, raw)
    assert caught.value.status == 400
    return caught.value.param


def test_every_documented_field_parses(config):
    c = parse_controls(config, {"regions": ["wuhan", "qingyang"], "exclude": ["shanghai"],
                                "max_price_yuan_per_mtok": 3, "sort": "latency", "deadline_s": 3600,
                                "session": "s-17"})
    assert c == Controls(
        frozenset({"wuhan", "qingyang"}), frozenset({"shanghai"}), 3.0, "latency", 3600.0, "s-17"
    )
    assert parse_controls(config, None) == Controls()
    assert parse_controls(config, {}) == Controls()


@pytest.mark.parametrize(("raw", "param"), [
    ({"provider": {"order": ["wuhan"]}}, "suanli.provider"),
    ({"max_price": 1}, "suanli.max_price"),
    ("wuhan", "suanli"),
    ({"regions": "wuhan"}, "suanli.regions"),
    ({"regions": []}, "suanli.regions"),
    ({"regions": ["wuhan", "atlantis"]}, "suanli.regions[1]"),
    ({"exclude": [3]}, "suanli.exclude[0]"),
    ({"max_price_yuan_per_mtok": 0}, "suanli.max_price_yuan_per_mtok"),
    ({"max_price_yuan_per_mtok": "2"}, "suanli.max_price_yuan_per_mtok"),
    ({"max_price_yuan_per_mtok": True}, "suanli.max_price_yuan_per_mtok"),
    ({"deadline_s": -1}, "suanli.deadline_s"),
    ({"sort": "price"}, "suanli.sort"),
    ({"session": ""}, "suanli.session"),
    ({"session": "x" * 300}, "suanli.session"),
])
def test_bad_controls_are_a_400_naming_the_field(config, raw, param):
    assert _param(config, raw) == param


def _ask(**fields) -> Ask:
    return Ask(model="deepseek-flash", work_class="interactive", origin="east", input_tokens=10,
               output_tokens=10, **fields)


def test_a_request_narrows_its_key_and_never_widens_it():
    key_ask = _ask(allowed_regions=frozenset({"wuhan", "shanghai"}))
    ask = narrowed(key_ask, Controls(regions=frozenset({"wuhan", "qingyang"})))
    assert ask.allowed_regions == {"wuhan"}
    with pytest.raises(PermissionDeniedError):
        narrowed(key_ask, Controls(regions=frozenset({"qingyang"})))
    ask = narrowed(_ask(), Controls(exclude=frozenset({"wuhan"})))
    assert ask.excluded == {"wuhan"} and ask.allowed_regions is None
    with pytest.raises(BadRequestError):
        narrowed(_ask(pinned_region="wuhan"), Controls(exclude=frozenset({"wuhan"})))


def test_a_deadline_makes_batch_work_unless_a_header_says_interactive():
    assert with_deadline(RequestContext()).work_class == "batch"
    assert with_deadline(RequestContext(work_class="training")).work_class == "training"
    with pytest.raises(BadRequestError):
        with_deadline(RequestContext(work_class="interactive"))
