"""No import cycles in sar_pipeline: neither between modules nor between its packages.

Imports are read from the source with ``ast`` (function-level imports included: a lazy import that
closes a cycle is still a cycle), so the test sees every edge without importing anything. The
packages form layers — ``archive`` below ``geo`` below ``captioning``/``dataset``/``diffusion``,
``defs`` on top — and a cycle between two of them (``archive`` ↔ ``geo`` once) would mean that
neither can be understood or changed without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sar_pipeline

PACKAGE_DIR = Path(sar_pipeline.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imported_modules(name: str, path: Path) -> set[str]:
    """The sar_pipeline modules ``name`` imports (``from pkg import submodule`` names the submodule)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: _imported_modules(name, path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    """The package (``sar_pipeline.geo``) or top-level module (``sar_pipeline.storage``) a module is in."""
    return ".".join(module.split(".")[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, …, a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_the_real_imports():
    # a few edges that exist, so an empty graph cannot pass for "no cycle"
    assert "sar_pipeline.archive.protocol" in GRAPH["sar_pipeline.geo.tiling"]
    assert "sar_pipeline.geo.footprints" in GRAPH["sar_pipeline.geo.scene_table"]
    assert "sar_pipeline.archive.plugins" in GRAPH["sar_pipeline.archive"]
    assert len(MODULES) > 50


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None
    # the archive ↔ geo cycle this test was written against, in miniature
    units = {"sar_pipeline.archive": {"sar_pipeline.geo"}, "sar_pipeline.geo": {"sar_pipeline.archive"}}
    assert _cycle(units) == ["sar_pipeline.archive", "sar_pipeline.geo", "sar_pipeline.archive"]


def test_no_module_imports_a_module_that_imports_it_back():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_package_imports_a_package_that_imports_it_back():
    units: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        units.setdefault(_unit(module), set()).update(_unit(m) for m in imported if _unit(m) != _unit(module))
    cycle = _cycle(units)
    assert cycle is None, "package import cycle: " + " → ".join(cycle)
