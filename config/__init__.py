"""Typed config: schema, loader with ${ENV} interpolation, bundled catalog."""

from __future__ import annotations

from suanli.config.errors import ConfigError
from suanli.config.health import HealthSettings, ProbeSettings
from suanli.config.loader import catalog_text, load_catalog, load_config, parse_config
from suanli.config.schema import (
    DAY_NAMES,
    Band,
    Capability,
    Classes,
    Config,
    Limits,
    Offer,
    OffPeak,
    Period,
    PlannerSettings,
    Price,
    Region,
    SimBehaviour,
    Timeouts,
    Voucher,
    WorkClass,
    Zone,
)

__all__ = [
    "Band",
    "Capability",
    "Classes",
    "Config",
    "ConfigError",
    "DAY_NAMES",
    "HealthSettings",
    "Limits",
    "OffPeak",
    "Offer",
    "Period",
    "PlannerSettings",
    "Price",
    "ProbeSettings",
    "Region",
    "SimBehaviour",
    "Timeouts",
    "Voucher",
    "WorkClass",
    "Zone",
    "catalog_text",
    "load_catalog",
    "load_config",
    "parse_config",
]
