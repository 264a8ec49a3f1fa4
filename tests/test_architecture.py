"""The layout's rules, read from the source (ast), so they stay true (docs/architecture.md).

Floors, bottom up: the kernel `warden`; `agent` and `rules` on it; `gateway` and
`simulators` above those; the command line `cli` and the benchmarks `bench` on top.
A package imports only its own floor's package and the floors below; `agent` and
`gateway` never import each other. Deferred imports (inside a function) count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("warden", "agent", "rules", "gateway", "simulators", "cli", "bench")

#: What each package may import besides itself.
MAY_IMPORT: dict[str, set[str]] = {
    "warden": set(),
    "agent": {"warden"},
    "rules": {"warden"},
    "gateway": {"warden", "rules"},
    "simulators": {"warden", "agent", "rules"},
    "cli": {"warden", "agent", "rules", "gateway", "simulators"},
    "bench": {"warden", "agent", "rules", "gateway", "simulators"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module `path` imports, at any depth in the file, absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target in imports(path, name) if target in known and target != name}
        for name, path in known.items()
    }


def test_every_package_imports_only_downwards() -> None:
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if (a := source.split(".")[0]) != (b := target.split(".")[0]) and b not in MAY_IMPORT[a]
    )
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules() -> None:
    """No module reaches itself through imports (deferred ones included): a cycle is a
    knot that only import order holds together."""
    edges = graph()
    cycles = []
    for module in edges:
        path = _path_back(edges, module)
        if path:
            cycles.append(" -> ".join(path))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def _path_back(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest import path from `start` back to itself, if any (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(edges.get(node, ())):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_the_checker_sees_the_package(package: str) -> None:
    """A test that found no modules would pass for the wrong reason."""
    assert any(name.split(".")[0] == package for name in modules())
