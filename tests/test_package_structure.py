"""The package's import structure: no import cycle, no private name used across modules.

Parses every module of `xlsr_jax/` and `data_pipelines/` (no import is executed) and checks
  * the graph of module-level and function-level imports between the package's own modules has no
    cycle (a lazy import inside a function is still a dependency);
  * no module imports or uses a `_private` name of another module (`from m import _x`,
    `m._x`, `import pkg._mod`), so every name one module uses from another is public.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("xlsr_jax", "data_pipelines")


def _modules() -> dict[str, str]:
    """{dotted module name: file path} of the packages' Python files."""
    out = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(folder, name)
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest prefix of `name` that is one of our modules."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(module: str) -> tuple[set[str], list[str]]:
    """(our modules `module` imports, private-name violations in it)."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read(), MODULES[module])
    package = module if MODULES[module].endswith("__init__.py") else module.rpartition(".")[0]
    deps, bad = set(), []
    aliases: dict[str, str] = {}  # local name -> our module it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = _resolve(a.name)
                if target:
                    deps.add(target)
                    aliases[a.asname or a.name.split(".")[0]] = target if a.asname else _resolve(a.name.split(".")[0])
                    if any(_is_private(part) for part in a.name.split(".")):
                        bad.append(f"{module}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            target = _resolve(base)
            if not target:
                continue
            if any(_is_private(part) for part in base.split(".")):
                bad.append(f"{module}: from {base} import ...")
            for a in node.names:
                sub = _resolve(f"{base}.{a.name}")
                if sub and sub != target:  # `from pkg import module`
                    deps.add(sub)
                    aliases[a.asname or a.name] = sub
                else:
                    deps.add(target)
                if _is_private(a.name) and target != module:
                    bad.append(f"{module}: from {base} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _is_private(node.attr):
            target = aliases.get(node.value.id)
            if target and target != module:
                bad.append(f"{module}: {node.value.id}.{node.attr} (line {node.lineno})")
    deps.discard(module)
    return deps, bad


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v][0]:
            # A package's __init__ importing its own submodules is how packages expose names.
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_the_parser_sees_the_packages():
    assert {"xlsr_jax.trainer", "xlsr_jax.tasks", "data_pipelines.sources"} <= set(MODULES)
    assert (
        "xlsr_jax.tasks.base" in GRAPH["xlsr_jax.tasks.ctc"][0]
        or "xlsr_jax.tasks.finetune" in GRAPH["xlsr_jax.tasks.ctc"][0]
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    cycles = [c for c in _cycles() if any(m.startswith(package) for m in c)]
    assert not cycles, f"import cycles: {cycles}"


def test_no_task_imports_the_trainer():
    for module, (deps, _) in GRAPH.items():
        if module.startswith("xlsr_jax.tasks"):
            assert "xlsr_jax.trainer" not in deps, module


def test_no_private_name_used_across_modules():
    bad = [line for _, (_, lines) in sorted(GRAPH.items()) for line in lines]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)
