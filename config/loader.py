"""Read a config from YAML or a mapping: ${ENV} interpolation, validation, cross-checks."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from suanli.config.errors import ConfigError
from suanli.config.providers import provider_problem
from suanli.config.schema import Config

__all__ = [
    "CATALOG_NAME",
    "anchored",
    "catalog_home",
    "catalog_text",
    "load_catalog",
    "load_config",
    "parse_config",
]

CATALOG_NAME = "catalog.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings, so pydantic and the config's timezone decide."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


def load_config(
    source: str | Path | Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load a config from a YAML file path or an already-parsed mapping."""
    env = os.environ if environ is None else environ
    if isinstance(source, Mapping):
        return parse_config(source, environ=env, source="config")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")], source=str(path)) from exc
    return anchored(_from_text(text, environ=env, source=str(path)), path.resolve().parent)


def catalog_text() -> str:
    """The bundled default catalog, as YAML text."""
    return resources.files("suanli.config").joinpath(CATALOG_NAME).read_text(encoding="utf-8")


def load_catalog(*, environ: Mapping[str, str] | None = None) -> Config:
    """The bundled catalog of city platforms (all ``provider: sim``, runs offline)."""
    env = os.environ if environ is None else environ
    return anchored(_from_text(catalog_text(), environ=env, source="bundled catalog"), catalog_home(env))


def catalog_home(environ: Mapping[str, str]) -> Path:
    """Where the bundled catalog keeps its state: ``$XDG_DATA_HOME/suanli`` (~/.local/share/suanli)."""
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "suanli"


def anchored(config: Config, home: Path) -> Config:
    """Resolve a relative SQLite ledger path and ``data_dir`` against ``home``.

    State lives in one place whatever the current folder: a config file's own folder (or the
    catalog's home), so ``suanli report`` run elsewhere reads the ledger ``suanli serve`` wrote.
    """
    url = config.ledger.url
    update: dict[str, Any] = {}
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path, sep, query = url[len(prefix):].partition("?")
        if path and path != ":memory:" and not path.startswith("/"):
            ledger = config.ledger.model_copy(update={"url": f"{prefix}{home / path}{sep}{query}"})
            update["ledger"] = ledger
    if config.data_dir and not Path(config.data_dir).is_absolute():
        update["data_dir"] = str(home / config.data_dir)
    return config.model_copy(update=update) if update else config


def _from_text(text: str, *, environ: Mapping[str, str], source: str) -> Config:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"invalid YAML: {exc}")], source=source) from exc
    if not isinstance(data, Mapping):
        raise ConfigError([("", "the top level must be a mapping")], source=source)
    return parse_config(data, environ=environ, source=source)


def parse_config(data: Mapping[str, Any], *, environ: Mapping[str, str], source: str = "config") -> Config:
    """Interpolate, validate and cross-check a parsed mapping into one immutable Config."""
    # Every problem at once: unset variables, schema errors and the references that can still
    # be checked on the raw mapping, so a user fixes a config in one round, not one per error.
    problems: list[tuple[str, str]] = []
    resolved = _interpolate(data, "", environ, problems)
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        problems.extend(_problems(exc))
        problems.extend(p for p in _raw_references(resolved) if p not in problems)
        raise ConfigError(problems, source=source) from exc
    if problems:
        raise ConfigError(problems + cross_check(config), source=source)
    config = _localize(config, problems)
    problems.extend(cross_check(config))
    if problems:
        raise ConfigError(problems, source=source)
    return config


def _interpolate(value: Any, path: str, environ: Mapping[str, str], problems: list) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set"))
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, Mapping):
        return {
            key: _interpolate(item, f"{path}.{key}" if path else str(key), environ, problems)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(item, f"{path}[{i}]", environ, problems) for i, item in enumerate(value)]
    return value


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    errors = exc.errors()
    # pydantic drops an invalid item and then also says the tuple is too short: keep the cause only.
    locs = [tuple(err["loc"]) for err in errors]

    def caused_by_child(loc: tuple) -> bool:
        return any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs)

    return [
        (_path(err["loc"]), err["msg"])
        for err in errors
        if not (err["type"] == "too_short" and caused_by_child(tuple(err["loc"])))
    ]


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _localize(config: Config, problems: list[tuple[str, str]]) -> Config:
    """Give dates without an offset the config's timezone."""
    try:
        tz = ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(("timezone", f"unknown timezone {config.timezone!r}"))
        return config

    def aware(moment: datetime | None) -> datetime | None:
        if moment is None or moment.tzinfo is not None:
            return moment
        return moment.replace(tzinfo=tz)

    vouchers = tuple(
        v.model_copy(update={"valid_from": aware(v.valid_from), "expires": aware(v.expires)})
        for v in config.vouchers
    )
    return config.model_copy(update={"vouchers": vouchers})


def cross_check(config: Config) -> list[tuple[str, str]]:
    """References between parts of the config: ids unique, vouchers point at what exists."""
    problems: list[tuple[str, str]] = []
    seen_regions: set[str] = set()
    for i, region in enumerate(config.regions):
        if region.id in seen_regions:
            problems.append((f"regions[{i}].id", f"duplicate region id {region.id!r}"))
        seen_regions.add(region.id)
        if region.provider == "openai" and not region.base_url:
            problems.append((f"regions[{i}].base_url", "an openai-compatible region needs base_url"))
        names: set[str] = set()
        for j, offer in enumerate(region.models):
            if offer.name in names:
                problems.append((f"regions[{i}].models[{j}].name", f"duplicate model {offer.name!r}"))
            names.add(offer.name)
        why = provider_problem(region.provider)
        if why:
            problems.append((f"regions[{i}].provider", why))
        if region.sim is not None and region.provider != "sim":
            problems.append((f"regions[{i}].sim", "sim settings need provider: sim"))
    seen_vouchers: set[str] = set()
    for i, voucher in enumerate(config.vouchers):
        where = f"vouchers[{i}]"
        if voucher.id in seen_vouchers:
            problems.append((f"{where}.id", f"duplicate voucher id {voucher.id!r}"))
        seen_vouchers.add(voucher.id)
        region = config.region(voucher.region)
        if region is None:
            problems.append((f"{where}.region", f"unknown region {voucher.region!r}"))
            continue
        for k, model in enumerate(voucher.models or ()):
            if region.offer(model) is None:
                problems.append((f"{where}.models[{k}]", f"region {region.id!r} does not offer {model!r}"))
        if voucher.valid_from and voucher.expires and voucher.expires <= voucher.valid_from:
            problems.append((f"{where}.expires", "expires must be after valid_from"))
    return problems


def _raw_references(data: Any) -> list[tuple[str, str]]:
    """The cross-checks that still make sense on a mapping the schema refused: provider names
    and the regions vouchers name."""
    problems: list[tuple[str, str]] = []
    if not isinstance(data, Mapping):
        return problems
    regions = data.get("regions") if isinstance(data.get("regions"), list) else []
    ids = {r.get("id") for r in regions if isinstance(r, Mapping)}
    for i, region in enumerate(regions):
        provider = region.get("provider") if isinstance(region, Mapping) else None
        why = provider_problem(provider) if isinstance(provider, str) and provider else None
        if why:
            problems.append((f"regions[{i}].provider", why))
    vouchers = data.get("vouchers") if isinstance(data.get("vouchers"), list) else []
    for i, voucher in enumerate(vouchers):
        region = voucher.get("region") if isinstance(voucher, Mapping) else None
        if isinstance(region, str) and region not in ids:
            problems.append((f"vouchers[{i}].region", f"unknown region {region!r}"))
    return problems
