"""The import graph of dlfm_auto: layers only import downward, and no module cycle.

Layers: data/models -> training -> study -> reports -> cli (the helpers ``_errors``, ``_io``,
``_urls`` and ``_arguments`` sit below everything). Imports inside functions count too: a lazy
import up the layers is still a dependency on a higher layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dlfm_auto

ROOT = Path(dlfm_auto.__file__).parent
LAYER = {"data": 1, "models": 1, "training": 2, "study": 3, "reports": 4, "cli": 5,
         "__main__": 5}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every dlfm_auto import in the file, function-level too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dlfm_auto":
                out += [(node.lineno, f"dlfm_auto.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return [(line, m) for line, m in out if m.split(".")[0] == "dlfm_auto"]


def _layer(module: str) -> int:
    bits = module.split(".")
    return LAYER.get(bits[1], 0) if len(bits) > 1 else 0


GRAPH = {_module(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_no_import_runs_up_the_layers():
    upward = [f"{m}:{line} imports {other}" for m, deps in GRAPH.items() for line, other in deps
              if _layer(other) > _layer(m)]
    assert upward == []


def test_no_import_cycle_between_modules():
    def target(name: str) -> str | None:  # "dlfm_auto.study._runner.work" -> the module
        while name and name not in GRAPH:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {t for _, d in deps if (t := target(d)) and t != m and not
                 m.startswith(t + ".")}  # a package's __init__ is not a cycle partner
             for m, deps in GRAPH.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for t in sorted(edges[m]):
            if seen.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in seen:
                visit(t, path + [t])
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m, [m])
    assert cycles == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker finds a function-level import (the kind that hid the old cycle)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from dlfm_auto.reports._memory import x\n")
    assert _imports(f) == [(2, "dlfm_auto.reports._memory")]


def test_the_command_line_parser_imports_no_heavy_module():
    """``--help`` stays instant: building every verb's parser loads no pandas, optuna, torch."""
    import subprocess
    import sys

    code = ("import sys; from dlfm_auto.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pandas', 'optuna', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent).stdout.strip()
    assert out == "[]"
