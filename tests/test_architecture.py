"""The package layering holds: app -> {index, training} -> crossmodal_kernel, no import cycles, small modules.

Read from the source (every ``import`` statement, including those inside functions), so a lazy
import cannot hide a dependency the layering forbids.
"""

from __future__ import annotations

import ast
import functools
import pickle
import subprocess
import sys
from pathlib import Path

import pytest


@functools.cache
def _parse(source: str) -> ast.Module:
    """``ast.parse`` in a fresh interpreter. CPython 3.11.7's AST constructor keeps one recursion
    counter per interpreter, which a failed or concurrent parse elsewhere in the process can leave
    off: "AST constructor recursion depth mismatch" (cpython gh-106905), seen late in this suite.
    AST nodes pickle, so the tree comes back whole."""
    script = "import ast, pickle, sys; sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.read())))"
    done = subprocess.run([sys.executable, "-c", script], input=source.encode(), capture_output=True, check=True)
    return pickle.loads(done.stdout)


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "index", "training", "crossmodal_kernel")
# What each package may import from the others.
ALLOWED = {
    "crossmodal_kernel": set(),
    "index": {"crossmodal_kernel"},
    "training": {"crossmodal_kernel"},
    "app": {"index", "training", "crossmodal_kernel"},
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Project modules ``path`` imports (``from a.b import c`` names ``a.b`` and, if a module, ``a.b.c``)."""
    targets = set()
    for node in ast.walk(_parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.add(node.module)
            targets.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {t for t in targets if t in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_packages_import_only_the_layers_below_them():
    wrong = sorted(
        (module, target)
        for module, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0] and target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    )
    assert wrong == []


def test_there_is_no_import_cycle():
    # Tarjan's strongly connected components; a package's __init__ importing its own modules is not a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w == v.rsplit(".", 1)[0]:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(_parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring does not count
            if body:
                assert body[-1].end_lineno - body[0].lineno + 1 <= MAX_FUNCTION_LINES, node.name
