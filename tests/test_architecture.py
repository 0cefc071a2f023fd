"""Modules and functions stay small enough to read in one sitting.

The import rules (layers, no cycle between siblings, handlers and routes as leaves) are
import-linter contracts in ``pyproject.toml``, checked by ``lint-imports`` in ``make lint``.
"""

from __future__ import annotations

import ast
import functools
import pickle
import subprocess
import sys
from pathlib import Path

import pytest


def _parse_all(sources: dict[str, str]) -> dict[str, ast.Module]:
    """``ast.parse`` of each source, in one fresh interpreter. CPython 3.11.7's AST constructor keeps
    one recursion counter per interpreter, which a failed or concurrent parse elsewhere in the process
    can leave off: "AST constructor recursion depth mismatch" (cpython gh-106905), seen late in this
    suite. AST nodes pickle, so the trees come back whole (one interpreter for all: one each took 12 s)."""
    script = (
        "import ast, pickle, sys; sources = pickle.loads(sys.stdin.buffer.read()); "
        "sys.stdout.buffer.write(pickle.dumps({k: ast.parse(v) for k, v in sources.items()}))"
    )
    done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(sources), capture_output=True, check=True)
    return pickle.loads(done.stdout)


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "index", "training", "crossmodal_kernel")  # benchmarks/ are scripts: not held to it yet
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


@functools.cache
def _trees() -> dict[str, ast.Module]:
    return _parse_all({name: path.read_text() for name, path in MODULES.items()})


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(_trees()[name]):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring does not count
            if body:
                assert body[-1].end_lineno - body[0].lineno + 1 <= MAX_FUNCTION_LINES, node.name
