#!/usr/bin/env python
"""Check the package's layering and import graph: ``python scripts/check_layers.py`` (exit 1 on a violation).

Every ``import`` / ``from ... import`` statement of every module under ``dllm/`` is read from the source (function-
local imports included, since they are edges too), and two rules are checked:

1. layers: a module imports only modules of its own layer or lower ones, where
   foundation (errors, registry, assets) < kernels < models < cache < samplers < engine/api/options
   < evals < training < cli;
2. no import circle between modules (strongly connected components of the graph).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dllm"

#: (module prefix, layer); the longest matching prefix wins
LAYERS: list[tuple[str, int]] = [
    ("dllm.errors", 0), ("dllm.registry", 0), ("dllm.assets", 0),
    ("dllm.kernels", 1),
    ("dllm.models", 2),
    ("dllm.cache", 3),
    ("dllm.samplers", 4),
    ("dllm.engine", 5), ("dllm.api", 5), ("dllm.options", 5), ("dllm", 5),
    ("dllm.evals", 6),
    ("dllm.training", 7),
    ("dllm.cli", 8), ("dllm.__main__", 8),
]
NAMES = {0: "foundation", 1: "kernels", 2: "models", 3: "cache", 4: "samplers", 5: "engine/api", 6: "evals",
         7: "training", 8: "cli"}


def layer_of(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> list[tuple[str, int]]:
    """(imported dllm module, line) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "dllm"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = me.split(".") if is_pkg else me.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base.split(".")[0] != "dllm":
                continue
            for a in node.names:  # "from dllm.x import y" may import the module dllm.x.y
                sub = f"{base}.{a.name}"
                out.append((sub if sub in modules else base, node.lineno))
    return out


def check(root: Path = ROOT) -> list[str]:
    """Problems found in ``root``/dllm (empty when the layering holds)."""
    files = sorted((root / "dllm").rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for f in files:
        me = module_name(f, root)
        for target, line in imports_of(f, modules, root):
            if target not in modules:
                continue
            if target != me:
                graph[me].add(target)
            if layer_of(target) > layer_of(me):
                problems.append(f"{f.relative_to(root)}:{line}: {me} ({NAMES[layer_of(me)]}) imports {target} "
                                f"({NAMES[layer_of(target)]}), a higher layer")
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    problems += [f"import circle: {' <-> '.join(c)}" for c in sccs]
    return problems


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    n = len(list(PACKAGE.rglob("*.py")))
    print(f"{'FAIL' if problems else 'ok'}: {n} modules, {len(problems)} layering problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
