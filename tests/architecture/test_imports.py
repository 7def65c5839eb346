"""The dependency rules of docs/architecture.md, checked on every import in the packages
(including imports inside functions), so a violation fails CI instead of waiting for review."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("liftloop", "workflows", "agents", "tools", "policies", "connectors", "approvals")
# Which top-level packages (or modules) each package may import.
ALLOWED: dict[str, tuple[str, ...]] = {
    "policies": ("policies",),
    "connectors": ("connectors", "policies"),
    "tools": ("tools", "policies", "connectors"),
    "agents": ("agents", "tools", "policies", "liftloop.loop.spec"),
    "workflows": ("workflows", "liftloop", "tools", "connectors"),
    "approvals": ("approvals", "liftloop", "workflows", "tools", "policies"),
    "liftloop": PACKAGES,
}
# The response simulator plays customers in the demo; nothing that decides may use it.
SIMULATOR_USERS = {"liftloop/demo.py", "liftloop/loop/simulate.py"}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _project_imports() -> Iterator[tuple[str, str, int, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, module in _imports(path):
                if module.split(".")[0] in PACKAGES:
                    yield package, rel, line, module


def _allowed(module: str, rules: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rules)


def test_each_package_imports_only_what_it_may() -> None:
    bad = [
        f"{rel}:{line} imports {module}"
        for package, rel, line, module in _project_imports()
        if not _allowed(module, ALLOWED[package])
        # `from x import name` also yields x.name; judge the module, not the name.
        and not _allowed(module.rsplit(".", 1)[0], ALLOWED[package])
    ]
    assert not bad, "\n".join(bad)


def test_no_package_imports_another_packages_private_module() -> None:
    bad = []
    for _, rel, line, module in _project_imports():
        parts = module.split(".")
        private = next((i for i, p in enumerate(parts) if p.startswith("_")), None)
        if private is None or private == len(parts) - 1:
            continue  # a private name, not a private module
        owner = "/".join(parts[:private])
        if not rel.startswith(owner + "/"):
            bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_only_the_demo_uses_the_simulator() -> None:
    bad = [
        f"{rel}:{line} imports {module}"
        for _, rel, line, module in _project_imports()
        if module.startswith("tools.simulation")
        and not rel.startswith("tools/simulation/")
        and rel not in SIMULATOR_USERS
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["Decision", "Channel", "Offer"])
def test_a_name_is_defined_once_across_packages(name: str) -> None:
    """Names that once meant four different things; one meaning each, no import aliases."""
    where = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                defined = (
                    [node.name]
                    if isinstance(node, ast.ClassDef)
                    else [t.id for t in node.targets if isinstance(t, ast.Name)]
                    if isinstance(node, ast.Assign)
                    else []
                )
                if name in defined:
                    where.append(path.relative_to(ROOT).as_posix())
    assert len(where) <= 1, where


def test_no_import_aliases_for_project_names() -> None:
    bad = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.ImportFrom)
                    and (node.module or "").split(".")[0] in PACKAGES
                ):
                    bad += [
                        f"{path.relative_to(ROOT)}: {a.name} as {a.asname}"
                        for a in node.names
                        if a.asname and a.asname != a.name
                    ]
    assert not bad, "\n".join(bad)
