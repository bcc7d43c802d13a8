"""What a config reload may change, and what it did change.

``POST /admin/reload`` and SIGHUP re-read the config file (``Router.reload``). Prices, regions,
models, vouchers, limits, classes, the planner and the demand prior take effect for requests
that start after it; requests in flight finish on the terms they started with. What the
running process is built on cannot change under it (``FIXED``): a new config that changes one
of those is refused whole, and the old one stays in force.
"""

from __future__ import annotations

from collections.abc import Sequence

from suanli.config import Config, Region, Voucher
from suanli.router.errors import BadRequestError

__all__ = ["FIXED", "check_reloadable", "config_changes", "shrinks"]

# Config fields a running server is built on: changing one needs a restart.
FIXED = ("timezone", "master_key", "max_body_bytes", "ledger", "data_dir", "limits_url", "health")
_SETTINGS = ("origin", "default_max_tokens", "planner", "classes", "demand", "reconcile", "alerts")


def check_reloadable(old: Config, new: Config) -> None:
    """BadRequestError naming the ``FIXED`` fields ``new`` changes, if any (the old config stays)."""
    fixed = [name for name in FIXED if getattr(old, name) != getattr(new, name)]
    if fixed:
        raise BadRequestError(f"the new config changes {', '.join(fixed)}, which need a restart; the"
                              " running config is kept", param=None, code="invalid_config")


def config_changes(old: Config, new: Config) -> dict[str, object]:
    """What ``new`` changes of ``old``, JSON-ready: regions, models (prices, ratios), vouchers, settings."""
    regions = _by_id(old.regions), _by_id(new.regions)
    vouchers = _by_id(old.vouchers), _by_id(new.vouchers)
    changed_regions: dict[str, list[str]] = {}
    for rid in sorted(regions[0].keys() & regions[1].keys()):
        fields = _region_fields(old.region(rid), new.region(rid))
        if fields:
            changed_regions[rid] = fields
    out: dict[str, object] = {
        "regions_added": sorted(regions[1].keys() - regions[0].keys()),
        "regions_removed": sorted(regions[0].keys() - regions[1].keys()),
        "regions_changed": changed_regions,
        "vouchers_added": sorted(vouchers[1].keys() - vouchers[0].keys()),
        "vouchers_removed": sorted(vouchers[0].keys() - vouchers[1].keys()),
        "vouchers_changed": sorted(
            vid for vid in vouchers[0].keys() & vouchers[1].keys() if vouchers[0][vid] != vouchers[1][vid]
        ),
        "settings_changed": sorted(
            name for name in _SETTINGS if getattr(old, name) != getattr(new, name)
        ),
    }
    out["changed"] = any(out.values())
    return out


def shrinks(changes: dict[str, object]) -> bool:
    """Whether a reload's ``config_changes`` take capacity away: a region, model or voucher
    removed, or a region's limits changed (``router/core/shedding.py`` counts supply short)."""
    regions = changes.get("regions_changed") or {}
    touched = [field for fields in regions.values() for field in fields]  # type: ignore[union-attr]
    return bool(changes.get("regions_removed") or changes.get("vouchers_removed")
                or any(f == "limits" or f.endswith(" removed") for f in touched))


def _by_id(items: Sequence[Region] | Sequence[Voucher]) -> dict[str, Region | Voucher]:
    return {item.id: item for item in items}


def _region_fields(old: Region | None, new: Region | None) -> list[str]:
    """``models.NAME.price`` and the like for models, the field name for the rest of a region."""
    if old is None or new is None or old == new:
        return []
    fields = [name for name in type(old).model_fields
              if name != "models" and getattr(old, name) != getattr(new, name)]
    before, after = {o.name: o for o in old.models}, {o.name: o for o in new.models}
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            fields.append(f"models.{name} added")
        elif name not in after:
            fields.append(f"models.{name} removed")
        else:
            fields += [f"models.{name}.{f}" for f in type(before[name]).model_fields
                       if getattr(before[name], f) != getattr(after[name], f)]
    return fields
