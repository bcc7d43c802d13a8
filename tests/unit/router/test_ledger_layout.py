"""The ledger's shape: one module of rules both drivers call, neither driver importing the other.

``router/ledger/*.py`` (the shared rules, rows and types) import no driver, except the port,
which opens either; ``sqlite/`` and ``postgres/`` never import each other; nothing in the
ledger imports another module's ``_private`` name or defines a mixin.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LEDGER = Path(__file__).resolve().parents[3] / "router" / "ledger"
DRIVERS = ("sqlite", "postgres")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def _driver_of(module: str, names: list[str]) -> set[str]:
    """Which drivers an import statement reaches (``from suanli.router.ledger import sqlite`` too)."""
    prefix = "suanli.router.ledger"
    if module == prefix:
        return {name for name in names if name in DRIVERS}
    parts = module.split(".")
    return {parts[3]} if module.startswith(prefix + ".") and parts[3] in DRIVERS else set()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_driver_never_imports_the_other(driver: str) -> None:
    other = next(d for d in DRIVERS if d != driver)
    bad = [
        f"{path.name} imports {module}"
        for path in sorted((LEDGER / driver).glob("*.py"))
        for module, names in _imports(path)
        if other in _driver_of(module, names)
    ]
    assert bad == []


def test_the_shared_modules_import_no_driver() -> None:
    bad = [
        f"{path.name} imports {module}"
        for path in sorted(LEDGER.glob("*.py"))
        if path.name != "port.py"  # the port opens either driver
        for module, names in _imports(path)
        if _driver_of(module, names)
    ]
    assert bad == []


def test_no_private_names_cross_modules_and_no_mixins() -> None:
    bad = []
    for path in sorted(LEDGER.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad += [f"{path.name} imports {n}" for m, names in _imports(path) if m.startswith("suanli")
                for n in names if n.startswith("_")]
        bad += [f"{path.name}: class {c.name}" for c in ast.walk(tree)
                if isinstance(c, ast.ClassDef) and c.name.endswith("Mixin")]
    assert bad == []
