"""The core knows nothing of the real world (issue 22, item 7): no module outside
``madopd/realworld`` imports it, except ``madopd demo``'s command; the task registry names it
only as a lazy ``"module:attribute"`` string. Importing the core does not load it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import madopd

ROOT = Path(madopd.__file__).parent
ENTRY_POINTS = {"commands/demo.py"}
REGISTRIES = {"tasks/__init__.py"}


def _core_files():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith("realworld/"):
            yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def test_core_modules_do_not_import_the_real_world():
    offenders = [f"{rel}:{node.lineno}" for rel, tree in _core_files() for node in ast.walk(tree)
                 if any(n.startswith("madopd.realworld") for n in _imported(node))
                 and rel not in ENTRY_POINTS]
    assert offenders == []


def test_the_old_core_modules_are_gone():
    # the moves of item 7: nothing real-world-specific is left in the core's namespace
    for rel in ("real_world.py", "real_table.py", "tasks/real_calls.py", "data/real_calls.jsonl",
                "data/real_debates.json"):
        assert not (ROOT / rel).exists(), rel


def test_only_the_registry_names_the_real_world_in_strings():
    named = {rel for rel, tree in _core_files() for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and "madopd.realworld" in node.value}
    assert named <= REGISTRIES | ENTRY_POINTS
    assert named >= REGISTRIES


def test_importing_the_core_loads_no_real_world_module():
    code = ("import sys, madopd, madopd.distill, madopd.debate, madopd.tasks, madopd.models, "
            "madopd.confidence, madopd.stats, madopd.cli\n"
            "print([m for m in sys.modules if m.startswith('madopd.realworld')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_registered_real_calls_resolves():
    from madopd.tasks import get_task

    task = get_task("real-calls")
    assert type(task).__module__ == "madopd.realworld.calls"
    assert len(task.eval_states()) > 0
