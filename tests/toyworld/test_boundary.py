"""The core knows nothing of the toy world (issue 13, item 8): no module outside
``madopd/toyworld`` imports it, except the CLI commands; the task and benchmark registries
name it only as lazy ``"module:attribute"`` strings."""

from __future__ import annotations

import ast
from pathlib import Path

import madopd

ROOT = Path(madopd.__file__).parent
ENTRY_POINTS = {"commands/demo.py", "commands/zoo.py"}
REGISTRIES = {"tasks/__init__.py", "bench/__init__.py"}


def _core_files():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith("toyworld/"):
            yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_core_modules_do_not_import_the_toy_world():
    offenders = []
    for rel, tree in _core_files():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.startswith("madopd.toyworld") for n in names) and rel not in ENTRY_POINTS:
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_only_the_registries_name_the_toy_world_in_strings():
    named = set()
    for rel, tree in _core_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    "madopd.toyworld" in node.value:
                named.add(rel)
    assert named <= REGISTRIES | ENTRY_POINTS
    assert named >= REGISTRIES  # the toy tasks and benchmark stay reachable by name


def test_registered_toy_names_resolve():
    from madopd.bench import get_benchmark
    from madopd.tasks import get_task

    assert type(get_benchmark("toy-code")).__module__ == "madopd.toyworld.toy_code"
    assert type(get_task("toy-tools")).__module__ == "madopd.toyworld.toy_tools"
    assert type(get_task("toy-code")).__module__ == "madopd.toyworld.toy_code"
