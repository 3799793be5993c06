"""The package's import graph: downward only, no cycles (docs/architecture.md, "Layering").

Every ``import`` statement of every module counts, function-level ones included, parsed with ``ast`` (nothing is
imported to build the graph). An import of a module's own ancestor package (``from . import register_family`` in
``models/ast.py``) is not an edge: Python has started that package before the module, whichever imports first.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

PACKAGE = "audio_repr"
SRC = Path(__file__).resolve().parent.parent / PACKAGE

#: top to bottom; a module imports only from its own row or a lower one (the longest matching prefix decides)
LAYERS = [
    ("entry points", ["cli", "hear", "xares"]),
    ("the package's namespace", [""]),
    ("corpus runs, engines, tasks", ["corpus", "corpus_run", "ray", "evaluate", "plot", "bench"]),
    ("inference", ["inference"]),
    ("families, front ends, blocks", ["models", "frontends", "layers"]),
    ("foundations", ["registry", "audio", "weights", "fusion", "_io", "_version"]),
]


def modules(src: Path = SRC) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of the package (a package is its ``__init__.py``)."""
    out = {}
    for p in sorted(src.rglob("*.py")):
        parts = list(p.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(mod: str, is_pkg: bool, level: int, target: Optional[str]) -> str:
    if level == 0:
        return target or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    graph: Dict[str, Set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        found: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:      # `import a.b.c` of a package: its deepest module we have
                    name = name.rpartition(".")[0]
                if name and name.split(".")[0] == PACKAGE and name != mod and not mod.startswith(name + "."):
                    found.add(name)
        graph[mod] = found
    return graph


def layer_of(mod: str) -> int:
    rel = mod[len(PACKAGE) + 1:] if mod != PACKAGE else ""
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if (rel == pre or rel.startswith(pre + ".") or pre == "") and len(pre) > depth:
                best, depth = i, len(pre)
    assert best is not None, f"{mod} has no layer: add it to LAYERS"
    return best


def upward(graph: Dict[str, Set[str]]) -> List[str]:
    return sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
                  for m, ts in graph.items() for t in ts if layer_of(t) < layer_of(m))


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The import cycles: one path per strongly connected component of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    comps: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_every_module_has_a_layer():
    for mod in modules():
        layer_of(mod)


def test_no_import_cycle():
    found = cycles(imports(modules()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_go_downward_only():
    bad = upward(imports(modules()))
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_graph_sees_function_level_imports():
    graph = imports(modules())
    assert "audio_repr.models" in graph["audio_repr.inference.loader"]          # inside load()
    assert "audio_repr.inference.pipeline" in graph["audio_repr.inference.encoder"]


@pytest.mark.parametrize("where, line, expect", [
    # a deliberately added upward import, at function level: the contract fails
    ("inference/pipeline.py", "def _oops():\n    from ..corpus import open_store\n", "upward"),
    # a deliberately added cycle inside one layer
    ("corpus.py", "def _oops():\n    from .ray import embed\n", "cycle"),
    ("registry.py", "def _oops():\n    from . import models\n", "upward"),
])
def test_the_contract_fails_on_an_added_upward_import_or_cycle(tmp_path, where, line, expect):
    import shutil

    copy = tmp_path / PACKAGE
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    with open(copy / where, "a", encoding="utf-8") as f:
        f.write("\n\n" + line)
    graph = imports(modules(copy))
    if expect == "upward":
        assert upward(graph) and not upward(imports(modules()))
    else:
        assert cycles(graph) and not cycles(imports(modules()))
