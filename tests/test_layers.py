"""Every import points down: the layer map of the project, and a walk over every module's imports.

Lazy imports inside functions count too: they are still arrows from one room to another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The one layer map (docs/ARCHITECTURE.md draws it). A module belongs to the longest prefix
# listed; it may import its own layer and the layers below, never one above.
LAYERS: dict[str, int] = {
    # 0 - ground floor: settings, the error tree, Redis keys, wire formats
    "shared.config": 0,
    "shared.errors": 0,
    "shared.keys": 0,
    "shared.features": 0,
    "shared.schemas": 0,
    "shared.tenants": 0,
    # 1 - the core: face engine, models, gallery, storage
    "shared": 1,
    "shared.engine": 1,
    "shared.models": 1,
    "shared.imaging": 1,
    "shared.alignment": 1,
    "shared.quality": 1,
    "shared.calibration": 1,
    "shared.verification": 1,
    "shared.gallery": 1,
    "shared.storage": 1,
    # 2 - jobs: the kinds and their runner, documents and their store, producer, backlogs
    "shared.jobs": 2,
    "shared.producer": 2,
    "shared.backlog": 2,
    # events turn requests into jobs and terminal jobs into events: they stand on the job layer
    "shared.events": 2,
    # 3 - front doors: the HTTP stub, the CLI, the Celery app and its tasks
    "api_stub": 3,
    "shared.cli": 3,
    "workers": 3,
    "shared.events.__main__": 3,
}
NAMES = {0: "ground floor", 1: "core", 2: "jobs", 3: "front doors"}
PACKAGES = ("shared", "workers", "api_stub")


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every project import in ``source`` (the text of ``module``), with
    ``from a import b`` resolved to ``a.b`` when ``b`` is a module."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if is_module(target) else base))
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


MODULES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert MODULES
    assert [module_name(p) for p in MODULES if layer_of(module_name(p)) is None] == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path) -> None:
    here = module_name(path)
    own = layer_of(here)
    assert own is not None
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({NAMES[theirs]} above {NAMES[own]})"
        for line, target in imports_of(path.read_text(), here, path.name == "__init__.py")
        if (theirs := layer_of(target)) is not None and theirs > own
    ]
    assert upward == []


def test_the_walk_sees_an_upward_import() -> None:
    # The checker itself: a lazy import of the runner from the ground floor is caught.
    source = "from shared import errors\n\ndef f() -> None:\n    from shared.jobs import runner\n"
    found = [name for _, name in imports_of(source, "shared.config")]
    assert found == ["shared.errors", "shared.jobs.runner"]
    assert layer_of("shared.jobs.runner") == 2 > layer_of("shared.config") == 0
