"""The layering of DESIGN.md, checked on the source: one import root, imports pointing down, no cycles.

config <- optimizer, providers <- router; inside ``router/`` the sub-packages form a ladder
(``SUBPACKAGE_MAY_IMPORT``); no import cycles (counting imports under ``if TYPE_CHECKING:`` and
inside functions); no module imports another module's ``_private`` name or reads another
object's private attribute; no mixins (share behaviour by composing objects); no file over
500 lines; every package folder is installed under ``suanli``.
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
# Private attributes of other libraries that we read or set on purpose: file -> names, with why.
FOREIGN_PRIVATES = {
    # argparse has no public name for the type add_subparsers() returns (for annotations).
    "router/ops/audit_cli.py": {"_SubParsersAction"},
    "router/simulate/cli.py": {"_SubParsersAction"},
    # aiohttp: send a stream's headers with its first chunk (one write less per streamed answer).
    "router/http/app.py": {"_send_headers_immediately"},
    # tiktoken: an Encoding's ranks, to build the DeepSeek tokenizer from the same table.
    "providers/tokenizer.py": {"_mergeable_ranks"},
}


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["suanli", *parts]) if parts[0] in PACKAGES else ".".join(parts)


def _imported(path: Path, *, typing_too: bool = False) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import, function-level ones included;
    those under ``if TYPE_CHECKING:`` only with ``typing_too``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not typing_too and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_mixins_share_behaviour_by_composition():
    found = []
    for path in _sources(*PACKAGES, "suanli"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(base) for base in node.bases]
            if node.name.endswith("Mixin") or any(base.endswith("Mixin") for base in bases):
                found.append(f"{path.relative_to(ROOT)}: class {node.name}({', '.join(bases)})")
    assert found == []


def test_no_module_imports_another_modules_private_name():
    found = [
        f"{path.relative_to(ROOT)}: from {module} import {name}"
        for path in _sources(*PACKAGES, "suanli")
        for module, names in _imported(path, typing_too=True)
        if _ours(module)
        for name in names
        if _is_private(name) or any(_is_private(part) for part in module.split("."))
    ]
    assert found == []


def _own_privates(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, class attributes, ``self._x`` and slots."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            own.add(node.value)  # __slots__ entries
    return {name for name in own if _is_private(name)}


def test_no_module_reads_another_objects_private_attributes():
    """``x._name`` on anything but ``self``/``cls`` must name a private this module defines."""
    found = []
    for path in _sources(*PACKAGES, "suanli"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = _own_privates(tree) | FOREIGN_PRIVATES.get(str(path.relative_to(ROOT)), set())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def _import_graph() -> dict[str, set[str]]:
    """Module -> our modules it imports, counting imports in functions and under TYPE_CHECKING."""
    paths = {_module_name(path): path for path in _sources(*PACKAGES, "suanli")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for module, names in _imported(path, typing_too=True):
            if not _ours(module):
                continue
            submodules = {f"{module}.{n}" for n in names if f"{module}.{n}" in paths}
            if module in paths and (not names or len(submodules) < len(names)):
                submodules.add(module)  # `from package import name`: the package's __init__
            graph[name] |= submodules - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
