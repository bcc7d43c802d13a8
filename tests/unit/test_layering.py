"""The layering of DESIGN.md: config <- optimizer, providers <- router; each package's __all__."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "config": {"optimizer", "providers", "router"},
    "optimizer": {"providers", "router"},
    "providers": {"optimizer", "router"},
    "router": set(),
}
CLOCK_OR_IO = ("time.time", "time.monotonic", "datetime.now", "datetime.utcnow")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_only(package: str):
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).glob("*.py"))
        for name in _imports(path) & (FORBIDDEN[package] | {"tests", "examples"})
    ]
    assert bad == []


def test_optimizer_reads_no_clock_and_does_no_io():
    offenders = []
    for path in sorted((ROOT / "optimizer").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {word}" for word in CLOCK_OR_IO if word in text]
        offenders += [f"{path.name}: imports {m}" for m in _imports(path) & {"aiohttp", "sqlite3", "socket"}]
    assert offenders == []


@pytest.mark.parametrize("package", ["config", "optimizer", "providers", "router"])
def test_public_names_are_exported_and_sorted(package: str):
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert all(hasattr(module, name) for name in exported)
