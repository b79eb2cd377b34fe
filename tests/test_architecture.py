"""The layers point one way (docs/architecture.rst): this test fails when an import
that breaks them appears, type-only imports included, and when modules import each
other in a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import pocket_agent

PACKAGE = Path(pocket_agent.__file__).parent

# A layer may import itself and the layers listed for it, nothing else of ours.
BASE = "base"
ALLOWED: dict[str, set[str]] = {
    BASE: set(),
    "history": {BASE},
    "core": {BASE, "history"},
    "runs": {BASE, "history", "core"},
    "wire": {BASE, "history", "core", "runs"},
    "ops": {BASE, "history", "core", "runs"},
    "net": {BASE, "history", "core", "runs", "wire", "ops"},
    "cli": {BASE, "history", "core", "runs", "wire", "ops", "net", "top"},
    "top": {BASE, "history", "core", "runs", "wire", "ops", "net", "cli"},
}
BASE_MODULES = {
    "pocket_agent",
    "pocket_agent.errors",
    "pocket_agent.times",
    "pocket_agent.storage",
}
TOP_MODULES = {"pocket_agent.compose", "pocket_agent.services", "pocket_agent.tap"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in BASE_MODULES or module.startswith("pocket_agent.config"):
        return BASE
    if module in TOP_MODULES:
        return "top"
    return module.split(".")[1]


def imports_of(path: Path, module: str | None = None) -> Iterator[tuple[int, str]]:
    """Every pocket_agent module ``path`` imports, relative imports resolved."""
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pocket_agent"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("pocket_agent"):
                # ``from pocket_agent.core import events`` imports a module too.
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    yield node.lineno, candidate if _is_module(candidate) else target


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in SOURCES:
        assert layer_of(module_name(path)) in ALLOWED, path


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_respect_the_layers(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module)
    wrong = [
        f"{module}:{line} imports {target} ({layer_of(target)})"
        for line, target in imports_of(path)
        if layer_of(target) != layer and layer_of(target) not in ALLOWED[layer]
    ]
    assert wrong == []


def test_the_domain_never_imports_the_transport() -> None:
    """The rule the layers exist for, said plainly."""
    for path in SOURCES:
        module = module_name(path)
        if layer_of(module) in ("core", "runs", "history"):
            for line, target in imports_of(path):
                assert not target.startswith(("pocket_agent.net", "pocket_agent.wire")), (
                    f"{module}:{line} imports {target}"
                )


def test_no_import_cycles() -> None:
    graph = {module_name(p): {t for _, t in imports_of(p)} for p in SOURCES}
    # A package's __init__ is imported on the way to its modules: not a dependency edge.
    graph = {
        m: {t for t in deps if t != m and not m.startswith(t + ".")} for m, deps in graph.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_relative_and_type_only_imports(tmp_path: Path) -> None:
    """The checker itself: what a domain module must not do is seen, however spelt."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..wire import messages\n"
        "if TYPE_CHECKING:\n"
        "    from pocket_agent.net.protocol import PocketAgentFactory\n"
    )
    targets = [t for _, t in imports_of(bad, "pocket_agent.core.bad")]
    assert targets == ["pocket_agent.wire.messages", "pocket_agent.net.protocol"]
    assert {layer_of(t) for t in targets} & ALLOWED["core"] == set()
