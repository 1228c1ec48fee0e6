"""house-calls (issue 22, item 2): generated, deterministic, held-out values disjoint from training."""

from __future__ import annotations

import json

import pytest

from madopd.realworld.house import GROUPS, HouseCallsTask, eval_values, generate_rows, train_values


def test_held_out_values_never_appear_in_training():
    for seed in (0, 1, 7):
        rows = generate_rows(seed)
        train, held = train_values(rows), eval_values(rows)
        assert len(held) == 64
        assert train & held == set()
        # nor as another function's value, nor in a training request's words
        assert {v for _, v in train} & {v for _, v in held} == set()
        train_text = " ".join(r["question"] + " " + r["call"] for r in rows if r["split"] == "train")
        for r in rows:
            if r["split"] == "eval" and isinstance(r["value"], str):
                assert f'"{r["value"]}"' not in train_text, r


def test_the_zoo_and_the_student_train_only_on_the_train_split():
    task = HouseCallsTask()
    held = {s.id for s in task.eval_states()}
    assert held.isdisjoint(s.id for s in task.train_states())
    assert all(r["split"] == "train" for r in task.train_rows())
    for group in GROUPS:  # a teacher's group view has the same held-out items
        sub = HouseCallsTask(groups=(group,))
        assert {s.id for s in sub.eval_states()} <= held
        assert {r["group"] for r in sub.rows} == {group}


def test_shape_and_determinism():
    task = HouseCallsTask()
    assert len(GROUPS) >= 2 and len(task.eval_states()) >= 64
    assert {r["family"] for r in task.eval_rows()} == {f for fns in GROUPS.values() for f in fns}
    assert generate_rows(0) == generate_rows(0)
    assert generate_rows(0) != generate_rows(1)


def test_the_prompt_does_not_state_the_convention():
    task = HouseCallsTask()
    for r, s in zip(task.eval_rows(), task.eval_states()):
        prompt = json.dumps(s.messages)
        assert str(r["value"]) not in prompt, r["id"]
        assert task.verify(s, s.reference) == 1.0


@pytest.mark.parametrize("reply,ok", [
    ('set_timer(duration="PT95M")', 1.0),
    ('set_timer(duration="95 minutes")', 0.0),  # the request's words: no convention
    ('set_timer(duration="PT95M", x=1)', 0.0),
    ("no call at all", 0.0),
    ('  set_timer(duration="PT95M")\n<<CONFIDENCE=90>>', 1.0),
])
def test_verify(reply, ok):
    task = HouseCallsTask()
    state = next(s for s in task.eval_states() if s.reference == 'set_timer(duration="PT95M")')
    assert task.verify(state, reply) == ok


def test_registered_by_name():
    from madopd.tasks import get_task

    assert type(get_task("house-calls")).__module__ == "madopd.realworld.house"
