"""toy-code-multi: every listed form passes, every hybrid fails (sandbox), the split is toy-code's,
and the zoo's training data samples the forms evenly."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from madopd.toyworld.toy_code import ToyCodeTask, check_grammar
from madopd.toyworld.toy_code_multi import FORMS, ToyCodeMultiTask, forms_of, hybrids
from madopd.toyworld.toy_common import FAMILIES, VAL_HI, VAL_LO, is_held_out

# constants at both ends, a trap (ends in 7) and ones whose digits repeat in the forms
SPEC_CS = (10, 17, 37, 64, 99)


@pytest.fixture(scope="module")
def task():
    return ToyCodeMultiTask()


def _states(task):
    return [task.make_state(f, c) for f in FORMS for c in SPEC_CS]


def test_forms_are_distinct_grammatical_and_canonical_first():
    for fam in FORMS:
        for c in (VAL_LO, 55, VAL_HI):
            fs = forms_of(fam, c)
            assert 2 <= len(fs) <= 4 and len(set(fs)) == len(fs)
            assert fs[0] == FAMILIES[fam].code(c)  # toy-code's one answer is form 0
            assert all(check_grammar(f) for f in fs)
            hy = hybrids(fam, c)
            assert hy and not hy & set(fs)


def test_every_form_passes_in_the_sandbox(task):
    states = _states(task)
    reps = [s for s in states for _ in s.meta["forms"]]
    texts = [f for s in states for f in s.meta["forms"]]
    assert task.verdicts(reps, texts) == ["pass"] * len(texts)


def test_every_hybrid_fails_in_the_sandbox(task):
    states = _states(task)
    reps, texts = [], []
    for s in states:
        for h in sorted(hybrids(s.family, s.meta["c"])):
            reps.append(s)
            texts.append(h)
    verdicts = task.verdicts(reps, texts)
    passed = [t for t, v in zip(texts, verdicts) if v == "pass"]
    assert not passed and len(texts) > 10 * len(states)


def test_held_out_split_is_toy_codes(task):
    for st in task.eval_states():
        assert is_held_out("toy-code", f"{st.family}:{st.meta['c']}")
    for st in task.train_states():
        assert not is_held_out("toy-code", f"{st.family}:{st.meta['c']}")
    key = lambda s: (s.family, s.meta["c"])  # noqa: E731
    assert sorted(map(key, task.eval_states())) == sorted(map(key, ToyCodeTask().eval_states()))
    n = len(FORMS) * (VAL_HI - VAL_LO + 1)
    assert len(task.train_states()) + len(task.eval_states()) == n


def test_answer_with_is_canonical_without_a_seed_and_even_with_one(task):
    st = task.make_state("add", 42)
    assert {task.answer_with(st, "add") for _ in range(20)} == {"x+42"}
    assert task.answer_with(st, "max") == "max(x,42)"  # another family's program at this C
    seeded = ToyCodeMultiTask(form_seed=3)
    draws = Counter(seeded.answer_with(st, "add") for _ in range(3000))
    assert set(draws) == set(forms_of("add", 42))
    assert all(abs(v / 3000 - 1 / 3) < 0.04 for v in draws.values())  # ~6 SE of a fair draw


def test_answer_with_is_deterministic_per_seed():
    st = ToyCodeMultiTask.make_state("sub", 30)
    a, b = ToyCodeMultiTask(form_seed=5), ToyCodeMultiTask(form_seed=5)
    assert [a.answer_with(st, "sub") for _ in range(40)] == [b.answer_with(st, "sub") for _ in range(40)]


def test_classify_reaches_every_class(task):
    st = task.make_state("max", 37)
    assert task.classify(st, "max(37,x)", True) == "form"
    assert task.classify(st, "max(x,37,x)", True) == "other_pass"  # valid, not listed
    assert task.classify(st, "min(37,x)", False) == "wrong_op"
    assert task.classify(st, "max(x,,x)", False) == "hybrid"
    assert task.classify(st, "banana", False) == "other_fail"
    assert task.canonical(st, "min(37,x)") == "min(x,37)" and task.canonical(st, "zz") == "zz"


def test_zoo_keys_of_single_world_members_are_unchanged():
    from madopd.toyworld.zoo import PROFILES, _spec_key, member_settings, profile_spec

    spec = PROFILES["default"]
    assert "code_world" not in member_settings(spec, "A")  # cached members keep their keys
    assert "code_world" not in _spec_key(spec)
    multi = profile_spec("multimode")
    assert member_settings(multi, "A")["code_world"] == "multi"
    assert _spec_key(multi)["code_world"] == "multi"


def test_multi_teacher_data_spreads_forms_evenly_on_training_specs():
    from madopd.toyworld.zoo import member_settings, profile_spec
    from madopd.toyworld.zoo_train import build_examples, training_states

    settings = member_settings(profile_spec("multimode-smoke"), "A")
    states, _ = training_states(settings, random.Random(0))
    assert states["toy-tools"] == []  # code only
    for st in states["toy-code"]:
        assert not is_held_out("toy-code", f"{st.family}:{st.meta['c']}")
    tool_ex, code_ex = build_examples(settings, random.Random(0))
    assert tool_ex == []
    idx: dict[int, Counter] = {2: Counter(), 3: Counter()}
    for ex in code_ex:
        if ex.kind != "blind":
            continue
        c = int(ex.chat[0]["content"].split()[-1])
        answer = ex.target
        for fam in FORMS:
            fs = forms_of(fam, c)
            if answer in fs:
                idx[len(fs)][fs.index(answer)] += 1
    for n, cnt in idx.items():
        total = sum(cnt.values())
        assert total > 100 and set(cnt) == set(range(n))
        assert all(abs(v / total - 1 / n) < 0.06 for v in cnt.values()), cnt
