"""The layering of DESIGN.md, checked on the source: one import root, imports pointing down, no cycles.

config <- optimizer, providers <- router; inside ``router/`` the sub-packages form a ladder
(``SUBPACKAGE_MAY_IMPORT``); no module imports another module's ``_private`` name; no mixins;
no file over 500 lines; every package folder is installed under ``suanli``.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "optimizer", "providers", "router")
FORBIDDEN = {
    "config": {"optimizer", "providers", "router"},
    "optimizer": {"providers", "router"},
    "providers": {"optimizer", "router"},
    "router": set(),
}
# router's sub-packages, and which of them each may import (besides itself). errors is a leaf
# module every part may raise from.
SUBPACKAGE_MAY_IMPORT = {
    "errors": set(),
    "ledger": {"errors"},
    "core": {"errors", "ledger"},
    "simulate": {"errors"},
    "status": {"errors", "ledger", "core"},
    "workloads": {"errors", "ledger", "core"},
    "http": {"errors", "ledger", "core", "status", "workloads"},
    "ops": {"errors", "ledger", "core", "status", "workloads", "http", "simulate"},
}
CLOCK_OR_IO = ("time.time", "time.monotonic", "datetime.now", "datetime.utcnow")
MAX_LINES = 500


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["suanli", *parts]) if parts[0] in PACKAGES else ".".join(parts)


def _imported(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((module, [alias.name for alias in node.names]))
    return found


def _ours(module: str) -> bool:
    return module == "suanli" or module.startswith("suanli.")


@pytest.mark.parametrize("folder", [*PACKAGES, "tests", "examples", "benchmarks", "suanli"])
def test_nothing_imports_a_generic_top_level_name(folder: str):
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _sources(folder)
        for module, _ in _imported(path)
        if module.split(".")[0] in PACKAGES
    ]
    assert bad == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_only(package: str):
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _sources(package)
        for module, _ in _imported(path)
        if module.split(".")[0] in {"tests", "examples", "benchmarks"}
        or (_ours(module) and module.split(".")[1:2] and module.split(".")[1] in FORBIDDEN[package])
    ]
    assert bad == []


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["suanli", "router"] else None


def test_router_subpackages_import_one_way():
    assert {p.name for p in (ROOT / "router").iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {
        "errors"
    } == set(SUBPACKAGE_MAY_IMPORT)
    bad = []
    for path in _sources("router"):
        here = _subpackage(_module_name(path))
        if here is None:
            continue
        for module, _ in _imported(path):
            there = _subpackage(module)
            if there is not None and there != here and there not in SUBPACKAGE_MAY_IMPORT[here]:
                bad.append(f"{path.relative_to(ROOT)} ({here}) imports {module} ({there})")
    assert bad == []


def test_every_package_folder_is_installed_under_suanli():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {
        _module_name(init)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert folders | {"suanli"} == set(setuptools["packages"])
    assert set(setuptools["package-dir"]) == {"suanli", *(f"suanli.{p}" for p in PACKAGES)}


def test_no_source_file_is_over_500_lines():
    long = [
        f"{path.relative_to(ROOT)}: {n}"
        for path in _sources(*PACKAGES, "suanli")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert long == []


def test_optimizer_reads_no_clock_and_does_no_io():
    offenders = []
    for path in _sources("optimizer"):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {word}" for word in CLOCK_OR_IO if word in text]
        offenders += [
            f"{path.name}: imports {m}"
            for m, _ in _imported(path)
            if m.split(".")[0] in {"aiohttp", "sqlite3", "socket"}
        ]
    assert offenders == []


@pytest.mark.parametrize(
    "package", ["suanli", "suanli.config", "suanli.optimizer", "suanli.providers", "suanli.router"]
)
def test_public_names_are_exported_and_sorted(package: str):
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert all(hasattr(module, name) for name in exported)
