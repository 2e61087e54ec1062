"""The package's shape, read from its imports with `ast`: layers import only downwards,
no import cycle (imports inside functions included), no module over 600 lines, and the
typed config schema and the error classes free of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("activelearn", "serving")
MAX_LINES = 600

# Bottom to top: a module may import its own layer and the layers before it.
LAYERS = [
    {"core", "config", "errors"},
    {"data"},
    {"workspace"},
    {"learner", "strategies"},
    {"scoring", "pipeline", "labeling"},
    {"tracking"},
    {"rounds"},
    {"__main__"},
    {"serving"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
    }


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports, wherever the import stands. Importing
    `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`; those implicit edges are
    left out, since a package's `__init__` re-exporting its own modules would otherwise
    make every package a cycle."""
    found = set()
    is_package = path.name == "__init__.py"
    own = module_name(path) if path.is_relative_to(ROOT) else path.stem
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                anchor = own.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module])
            # `from pkg import mod` imports the module; `from mod import name` the module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in known and t != own}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    room = parts[0] if parts[0] == "serving" else (parts[1] if len(parts) > 1 else "__init__")
    for rank, rooms in enumerate(LAYERS):
        if room in rooms:
            return rank
    raise AssertionError(f"{module}: no layer for its room {room!r}; add it to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(planted) == [["a", "b", "c"]]


def test_layers_import_only_downwards():
    upward = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        if module != "activelearn"  # the package's own __init__ imports nothing of ours
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert upward == []


@pytest.mark.parametrize("module", ["activelearn.config", "activelearn.errors"])
def test_schema_and_errors_import_nothing_of_ours(module):
    assert graph()[module] == set()


def test_no_module_is_over_600_lines():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_imports_are_read_inside_functions_too(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from activelearn.rounds import run_round\n")
    assert imports(source, {"activelearn.rounds"}) == {"activelearn.rounds"}
