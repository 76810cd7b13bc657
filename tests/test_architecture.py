"""The package's shape, checked: the import layers declared in pyproject.toml
(``[tool.importlinter]``, run with lint-imports), no import circle, every module importable
alone in a fresh interpreter, and function-level imports only where start-up cost needs
them (the command line)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import harper_certd

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(harper_certd.__file__).resolve().parent
# Modules whose function-level imports are there for start-up cost: the command line loads
# per command what that command needs (validate is timed against a bare cryptography script).
STARTUP_COST = {"harper_certd.cli"}


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_import_layers_are_kept() -> None:
    """lint-imports over the contracts in pyproject.toml: 0 broken."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter is not None, "import-linter is a test dependency (pip install -e '.[test]')"
    done = subprocess.run(
        [linter, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root, edges in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle() -> None:
    """Every import counted, at module level, inside functions and for type checking only
    (a type-only circle is a circle of the design all the same: ``lane.parts`` broke the
    last one): no two modules reach each other."""
    g = grimp.build_graph("harper_certd", exclude_type_checking_imports=False)
    graph = {
        m: {d for d in g.find_modules_directly_imported_by(m) if d.startswith("harper_certd")}
        for m in g.modules
        if m.startswith("harper_certd")
    }
    # A package's __init__ is not an import of its children: only real edges count.
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _says_startup_cost(lines: list[str], lineno: int) -> bool:
    """Whether the import at 1-based ``lineno`` is explained: ``start-up cost`` in a comment on its
    own line, or in the comment block just above the block of import lines it belongs to."""
    if "start-up cost" in lines[lineno - 1]:
        return True
    row = lineno - 2
    while row >= 0 and lines[row].strip().startswith(("import ", "from ")):
        row -= 1
    while row >= 0 and lines[row].strip().startswith("#"):
        if "start-up cost" in lines[row]:
            return True
        row -= 1
    return False


def test_function_level_imports_only_for_startup_cost() -> None:
    """An import inside a function hides a dependency (and, before, an import circle): only
    for start-up cost, in the command line (its docstring says so) or with a comment saying
    ``start-up cost`` on the line before (or above the block of imports it heads, or on the
    import's own line)."""
    assert _says_startup_cost(["# start-up cost", "import a", "import b"], 3)
    assert not _says_startup_cost(["x = 1", "import a"], 2)
    unexplained = []
    for module in _modules():
        lines = _module_path(module).read_text().splitlines()
        for func in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if not isinstance(node, ast.Import | ast.ImportFrom) or module in STARTUP_COST:
                    continue
                if not _says_startup_cost(lines, node.lineno):
                    unexplained.append(f"{module}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert unexplained == []


def _module_path(module: str) -> Path:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _defines_named_tuple(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ClassDef)
        and any(ast.unparse(base) in ("NamedTuple", "typing.NamedTuple") for base in node.bases)
        for node in ast.walk(tree)
    )


def test_record_modules_evaluate_their_annotations() -> None:
    """A module that declares a ``typing.NamedTuple`` has no ``from __future__ import
    annotations``: with it, every field's annotation is a string that typing compiles into a
    ``ForwardRef`` when the class is built (about 30 us a field on CPython 3.11), and the
    records a command builds at start cost it twice as much (docs/architecture.md, Records).
    A name that exists only for type checking is quoted where it is used."""
    future = []
    for module in _modules():
        tree = ast.parse(_module_path(module).read_text())
        has_future = any(
            isinstance(node, ast.ImportFrom)
            and node.module == "__future__"
            and any(a.name == "annotations" for a in node.names)
            for node in tree.body
        )
        if has_future and _defines_named_tuple(tree):
            future.append(module)
    assert future == []


def test_pyyaml_is_imported_through_its_module() -> None:
    """The package imports PyYAML only through ``harper_certd.pyyaml``, which defers its
    patterns to their first use (one libyaml never uses cost 7-15 ms of every command that
    reads a configuration): an ``import yaml`` elsewhere, run first, compiles them all."""
    direct = []
    for module in _modules():
        if module == "harper_certd.pyyaml":
            continue
        for node in ast.walk(ast.parse(_module_path(module).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if any(n == "yaml" or n.startswith("yaml.") for n in names):
                direct.append(f"{module}:{node.lineno}")
    assert direct == []


# harper_certd.__main__ runs the command line when imported (python -m harper_certd).
@pytest.mark.parametrize("module", [m for m in _modules() if m != "harper_certd.__main__"])
def test_every_module_imports_alone(module: str) -> None:
    """A fresh interpreter imports the module and nothing else first: an import that only
    works after another module was loaded is a hidden circle."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
