"""toy-code: items, held-out split, and sandboxed verification (batched and isolated)."""

from __future__ import annotations

import pytest

from madopd.errors import ConfigError
from madopd.toyworld.toy_code import ToyCodeTask, check_grammar
from madopd.toyworld.toy_common import FAMILIES


@pytest.fixture(scope="module")
def task():
    return ToyCodeTask()


def test_split_is_disjoint_and_covers_every_family(task):
    train = {s.id for s in task.train_states()}
    held = {s.id for s in task.eval_states()}
    assert not train & held
    assert len(train) + len(held) == 5 * 90
    assert {s.family for s in task.eval_states()} == set(FAMILIES)


def test_references_pass_and_swapped_ops_fail(task):
    states = task.eval_states()[:40]
    wrong = [task.answer_with(s, FAMILIES[s.family].wrong) for s in states]
    refs = [s.reference for s in states]
    got = task.verify_batch(states + states, refs + wrong)
    assert got[:40] == [1.0] * 40
    assert got[40:] == [0.0] * 40


def test_batched_equals_isolated(task):
    states = task.eval_states()[:6]
    resp = [states[0].reference, "x+1", "max(x,1)", "x//0", "abs(x)", states[5].reference]
    one = ToyCodeTask(batch_size=1)
    assert task.verdicts(states, resp) == one.verdicts(states, resp)


def test_grammar_filter_rejects_without_running(task):
    assert check_grammar("max(x,37)") and check_grammar("abs(x-3)+1")
    for bad in ["__import__('os').system('id')", "x.real", "[x][0]", "open('f')", "x;1", ""]:
        assert not check_grammar(bad)
    st = task.eval_states()[0]
    before = task.counters["rejected"]
    assert task.verify(st, "__import__('os').system('touch /tmp/pwned')") == 0.0
    assert task.counters["rejected"] == before + 1


def test_sandbox_violations_are_failures_not_crashes():
    """A runaway candidate is stopped by its time guard and fails alone."""
    t = ToyCodeTask()
    states = t.eval_states()[:3]
    resp = [states[0].reference, "max(x,10**10**8)", states[2].reference]
    assert t.verdicts(states, resp) == ["pass", "timeout", "pass"]


def test_dead_batch_is_rerun_one_candidate_per_process(monkeypatch):
    """When the whole batched script dies, its candidates are isolated (counted)."""
    import madopd.sandbox as sb

    real = sb.run_many

    def flaky(sources, **kw):  # the first call (one script, 3 candidates) dies; reruns are real
        if len(sources) == 1:
            return [sb.RunResult("timeout", None, "", "", 1.0, "wall")]
        return real(sources, **kw)

    monkeypatch.setattr(sb, "run_many", flaky)
    t = ToyCodeTask()
    states = t.eval_states()[:3]
    resp = [states[0].reference, "x+1", states[2].reference]
    assert t.verify_batch(states, resp) == [1.0, 0.0, 1.0]
    assert t.counters["batch_failed"] == 1 and t.counters["batch_isolated"] == 3


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="families"):
        ToyCodeTask(families=("add", "pow"))
    with pytest.raises(ConfigError, match="verify_batch"):
        ToyCodeTask().verify_batch([], ["x"])


def test_benchmark_adapter_scores_references_and_counts():
    from madopd.bench import Benchmark
    from madopd.toyworld.toy_code import ToyCodeBenchmark

    b = ToyCodeBenchmark()
    assert isinstance(b, Benchmark)
    states = b.states(limit=4)
    res = b.score(states, [[b.reference(s), "x"] for s in states], ks=(1, 2))
    assert res.summary["pass@1"] == 0.5 and res.summary["pass@2"] == 1.0
    assert len(res.records) == 8 and {r["verdict"] for r in res.records} == {"pass", "wrong"}
