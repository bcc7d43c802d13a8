"""The city compute-voucher programmes (bundled ``programmes.yaml``): a strict, sourced schema.

Every number is a ``Figure``: its value, a provenance ``tag`` (the tags of the domain
research: ``S`` sourced, ``S-off`` the vendor's own page, ``U`` press claim not re-verified,
``D`` arithmetic on sourced numbers, ``E`` our estimate) and the ``source`` it comes from.
An estimate says so (``tag: E``) and why, so ``suanli advise`` can mark it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from suanli.config.errors import ConfigError

__all__ = [
    "Eligibility",
    "Figure",
    "Gives",
    "Programme",
    "Programmes",
    "Text",
    "load_programmes",
    "parse_programmes",
    "programmes_text",
]

PROGRAMMES_NAME = "programmes.yaml"
Tag = Literal["S", "S-off", "U", "D", "E"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Figure(_Frozen):
    """A number with where it comes from."""

    value: float = Field(ge=0)
    tag: Tag
    source: str = Field(min_length=1)
    note: str | None = None

    @property
    def estimate(self) -> bool:
        return self.tag == "E"


class Text(_Frozen):
    """A fact in words (a sector, a company size, a queue) with where it comes from."""

    text: str = Field(min_length=1)
    tag: Tag
    source: str = Field(min_length=1)


class Gives(_Frozen):
    """What the programme pays: a voucher of ``kind`` paying ``rate`` of the bill up to ``cap_yuan``."""

    kind: Literal["tokens", "credit", "discount"]
    rate: Figure | None = None  # share of the bill the voucher pays (discount)
    cap_yuan: Figure | None = None  # most one enterprise gets a year
    pool_yuan: Figure | None = None  # the programme's whole budget (a year, unless noted)

    @model_validator(mode="after")
    def _check(self) -> Gives:
        if self.kind == "discount" and self.rate is None:
            raise ValueError("a discount programme needs rate (the share of the bill it pays)")
        if self.rate is not None and not 0 < self.rate.value <= 1:
            raise ValueError("rate is a share of the bill: in (0, 1]")
        return self


class Eligibility(_Frozen):
    """Who may apply. ``revenue_or_team``: either threshold suffices (Wuhan's rule), else both."""

    min_annual_spend_yuan: Figure | None = None
    min_prior_revenue_yuan: Figure | None = None
    min_team_size: Figure | None = None
    revenue_or_team: bool = False
    company_size: Text | None = None
    sector: Text | None = None


class Programme(_Frozen):
    """One city programme."""

    id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    city: str = Field(min_length=1)
    platform: Text
    region: str | None = None  # the bundled catalog's region it pays at (None: not in the catalog)
    gives: Gives
    eligibility: Eligibility = Eligibility()
    lead_time_weeks: tuple[Figure, Figure] | None = None  # (shortest, longest) application time
    startup_friendly: Literal["yes", "mixed", "no", "unknown"]
    startup_note: Text | None = None

    @model_validator(mode="after")
    def _check(self) -> Programme:
        if self.lead_time_weeks is not None and self.lead_time_weeks[0].value > self.lead_time_weeks[1].value:
            raise ValueError("lead_time_weeks: the shortest is longer than the longest")
        return self


class Programmes(_Frozen):
    """The catalog of programmes."""

    programmes: tuple[Programme, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Programmes:
        ids = [p.id for p in self.programmes]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"programme ids repeated: {', '.join(duplicated)}")
        return self

    def get(self, programme_id: str) -> Programme:
        """The programme ``programme_id``; KeyError names the known ones."""
        for programme in self.programmes:
            if programme.id == programme_id:
                return programme
        raise KeyError(f"no programme {programme_id!r}; known: {', '.join(p.id for p in self.programmes)}")


def programmes_text() -> str:
    """The bundled programmes catalog, as YAML text."""
    return resources.files("suanli.config").joinpath(PROGRAMMES_NAME).read_text(encoding="utf-8")


def parse_programmes(data: Mapping[str, Any], *, source: str = "programmes") -> Programmes:
    """Validate a parsed mapping; a ConfigError names every offending path."""
    try:
        return Programmes.model_validate(data)
    except ValidationError as exc:
        problems = [
            (
                ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "["),
                e["msg"],
            )
            for e in exc.errors()
        ]
        raise ConfigError(problems, source=source) from exc


def load_programmes(path: str | Path | None = None) -> Programmes:
    """The programmes at ``path``, or the bundled catalog."""
    text = Path(path).read_text(encoding="utf-8") if path else programmes_text()
    source = str(path) if path else "bundled programmes"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"invalid YAML: {exc}")], source=source) from exc
    if not isinstance(data, Mapping):
        raise ConfigError([("", "the top level must be a mapping")], source=source)
    return parse_programmes(data, source=source)
