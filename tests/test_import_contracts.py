"""The import contracts of pyproject.toml's [tool.importlinter] (layers, the core never imports
the widgets or a world, no cycle between siblings), checked by import-linter itself, plus the
one kind of cycle import-linter's contracts do not see: a package and one of its own modules
importing each other (``madopd.sandbox`` <-> ``madopd.sandbox.cgroup`` was one).

So ``python -m pytest`` (the README's test command) checks what ``lint-imports`` checks in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp  # import-linter's graph library (the dev extra installs both)
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_lint_imports_keeps_every_contract():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # lint-imports' own entry point, run from the repository root so it reads pyproject.toml
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    try:
        proc = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300,
                              start_new_session=True)
    except subprocess.TimeoutExpired:  # pragma: no cover - the child's group is gone with it
        pytest.fail("lint-imports ran past 300 s")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "0 broken" in out and "3 kept" in out, out[-2000:]


def _strongly_connected(graph, modules: set[str]) -> list[set[str]]:
    """Tarjan's components of the direct-import graph restricted to ``modules`` (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)
                                                & modules))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_no_module_level_import_cycle():
    graph = grimp.build_graph("madopd")  # lazy (in-function) imports count too
    modules = {m for m in graph.modules if m == "madopd" or m.startswith("madopd.")}
    cycles = _strongly_connected(graph, modules)
    assert cycles == [], f"import cycles: {[sorted(c) for c in cycles]}"


def test_cycle_finder_finds_a_cycle():
    """The finder above is not vacuous: a two-module and a three-module cycle are found."""

    class Graph:
        edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return set(self.edges.get(m, ()))

    comps = _strongly_connected(Graph(), set("abcdef"))
    assert sorted(map(sorted, comps)) == [["a", "b"], ["c", "d", "e"]]
