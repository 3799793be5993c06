"""No function in ``audio_repr/`` above cyclomatic complexity 20 (radon's count, as issue 31 measured it) or longer
than 80 lines, so that it stays true as families are added: a function that does several jobs is split into
named steps instead."""

import ast
from pathlib import Path

import pytest

radon = pytest.importorskip("radon.complexity")

PACKAGE = Path(__file__).resolve().parents[1] / "audio_repr"
MAX_COMPLEXITY = 20
MAX_LINES = 80


def _functions():
    """(file, qualified name, complexity, lines) of every function and method in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(PACKAGE.parent).as_posix()
        complexity = {}
        blocks = list(radon.cc_visit(source))
        while blocks:
            block = blocks.pop()
            complexity[(block.name, block.lineno)] = block.complexity
            blocks.extend(getattr(block, "methods", []) + getattr(block, "closures", []))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield (rel, node.name, complexity.get((node.name, node.lineno), 0), node.end_lineno - first + 1)


def test_the_rule_sees_every_function():
    found = list(_functions())
    assert len(found) > 500 and any(cc > 10 for _, _, cc, _ in found)      # radon's numbers are read


def test_no_function_is_too_complex_or_too_long():
    bad = [f"{rel}: {name} (complexity {cc}, {n} lines)" for rel, name, cc, n in _functions()
           if cc > MAX_COMPLEXITY or n > MAX_LINES]
    assert not bad, ("split these into named steps (at most complexity "
                     f"{MAX_COMPLEXITY} and {MAX_LINES} lines each):\n" + "\n".join(bad))
