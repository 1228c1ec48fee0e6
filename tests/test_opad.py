"""OPAD: step-level states (teacher-forced and full), the grouped sampler, training on episodes."""

from __future__ import annotations

import pytest
from distill_helpers import make_cfg

from madopd.distill import Distiller
from madopd.errors import DataError
from madopd.opad import (
    GroupedSampler,
    episode_states,
    rollout_episode,
    rollout_episodes,
    teacher_forced_states,
)
from madopd.tasks.base import Episode
from madopd.tasks.simple import SimpleEpisodicTask
from madopd.types import Samples, Sampling


class EchoEnv:
    """Observations depend on the action; the episode ends after ``length`` actions."""

    def __init__(self, length=3):
        self.length = length

    def step(self, episode, history, action):
        n_actions = sum(m["role"] == "assistant" for m in history) + 1
        done = n_actions >= self.length
        return (None if done else f"result({action.strip()})"), done


def _episode(i=0, length=3):
    return Episode(id=f"ep{i}", messages=[{"role": "user", "content": f"task {i}"}],
                   reference_actions=[f"call{j}()" for j in range(length)], family="f")


class ScriptedStudent:
    """Acts by a rule on the state (no model): lets a test choose the actions."""

    def __init__(self, rule):
        self.rule = rule

    def rollout(self, states, sampling):
        texts = [self.rule(s) for s in states]
        ids = [[ord(c) for c in t] + [0] for t in texts]
        return Samples([[1, 2]] * len(states), ids, texts, [False] * len(states))


def test_teacher_forced_states_follow_the_reference():
    states = teacher_forced_states(_episode(), EchoEnv())
    assert [s.id for s in states] == ["ep0#0", "ep0#1", "ep0#2"]
    assert [s.reference for s in states] == ["call0()", "call1()", "call2()"]
    assert states[2].messages == [
        {"role": "user", "content": "task 0"},
        {"role": "assistant", "content": "call0()"}, {"role": "tool", "content": "result(call0())"},
        {"role": "assistant", "content": "call1()"}, {"role": "tool", "content": "result(call1())"}]
    assert states[1].meta["episode_id"] == "ep0" and states[1].meta["step"] == 1
    with pytest.raises(DataError, match="reference"):
        teacher_forced_states(Episode("e", [{"role": "user", "content": "x"}]), EchoEnv())


def test_full_mode_later_states_come_from_the_students_own_actions():
    env = EchoEnv()
    ep = _episode()
    task = SimpleEpisodicTask([ep], environment=env)
    runs = {}
    for first in ("search(a)", "search(b)"):
        student = ScriptedStudent(lambda s, f=first: f if s.meta["step"] == 0 else "answer()")
        runs[first] = rollout_episode(student, task, ep, Sampling(), max_steps=5)
    (h_a, acts_a, st_a), (h_b, acts_b, st_b) = runs.values()
    assert st_a[0].messages == st_b[0].messages  # same opening state
    assert st_a[1].messages != st_b[1].messages  # the environment answered different actions
    assert st_a[1].messages[-1] == {"role": "tool", "content": "result(search(a))"}
    assert st_b[1].messages[-1] == {"role": "tool", "content": "result(search(b))"}
    assert acts_a == ["search(a)", "answer()", "answer()"] and len(st_a) == 3
    assert h_a[-1] == {"role": "assistant", "content": "answer()"}


def test_full_mode_counts_truncated_episodes():
    counters = {}
    student = ScriptedStudent(lambda s: "x")
    runs = rollout_episodes(student, [_episode(0, 5), _episode(1, 2)], EchoEnv(length=2), Sampling(),
                            max_steps=1, counters=counters)
    assert [r.done for r in runs] == [False, False] and counters["count/episode_truncated"] == 2


def test_tool_results_never_enter_response_ids(tiny_dirs):
    from madopd.models.hf import HFStudent

    student = HFStudent(tiny_dirs["student"])
    task = SimpleEpisodicTask([_episode()], environment=EchoEnv())
    runs = rollout_episodes(student, task.train_episodes(), task.environment,
                            Sampling(max_new_tokens=5, seed=0), max_steps=3)
    from madopd.models._common import render_prompt_ids

    tok = student.tokenizer
    tool_id = tok.convert_tokens_to_ids("<|tool|>")
    r = runs[0]
    assert len(r.states) == 3
    for m, (st, p, ids) in enumerate(zip(r.states, r.prompt_ids, r.response_ids)):
        # the prompt is exactly the rendered history (tool results included from step 1 on) ...
        assert p == render_prompt_ids(tok, st.messages)
        assert (tool_id in p) == (m > 0)
        # ... and the response is exactly the student's own sample for this step
        assert student.decode(ids) == r.actions[m]
        for msg in st.messages:
            if msg["role"] == "tool":
                obs = list(tok(msg["content"], add_special_tokens=False)["input_ids"])
                assert not any(ids[i:i + len(obs)] == obs for i in range(len(ids)))


def test_episode_states_dispatches_both_modes():
    task = SimpleEpisodicTask([_episode()], environment=EchoEnv())
    tf = episode_states(task, _episode(), "teacher_forced")
    full = episode_states(task, _episode(), "full", student=ScriptedStudent(lambda s: "call0()"),
                          max_steps=4)
    assert len(tf) == 3 and len(full) == 3
    assert full[1].messages[-1]["content"] == "result(call0())"


def test_grouped_sampler_keeps_groups_together_and_resumes():
    groups = [[0, 1, 2], [3], [4, 5], [6, 7, 8, 9, 10], [11]]
    s = GroupedSampler(groups, batch_size=4, seed=3)
    epoch = [s.next_batch() for _ in range(len(s._batches))]
    assert sorted(i for b in epoch for i in b) == list(range(12))
    for g in groups:
        if len(g) <= 4:  # a group that fits lies inside one batch, in order
            holder = [b for b in epoch if g[0] in b][0]
            assert holder[holder.index(g[0]): holder.index(g[0]) + len(g)] == g
    assert all(len(b) <= 4 for b in epoch)
    state = s.state_dict()
    nxt = [s.next_batch() for _ in range(3)]
    s2 = GroupedSampler(groups, batch_size=4, seed=3)
    s2.load_state_dict(state)
    assert [s2.next_batch() for _ in range(3)] == nxt
    # two processes see disjoint batches of the same epoch order
    r0 = GroupedSampler(groups, 4, seed=3, rank=0, world_size=2)
    r1 = GroupedSampler(groups, 4, seed=3, rank=1, world_size=2)
    assert r0.next_batch() == epoch[0] and r1.next_batch() == epoch[1]


@pytest.mark.parametrize("mode", ["teacher_forced", "full"])
def test_distiller_trains_on_episodes(tiny_dirs, mode):
    task = SimpleEpisodicTask([_episode(i, 2) for i in range(4)], [_episode(9, 2)],
                              environment=EchoEnv(length=2))
    cfg = make_cfg(tiny_dirs, "mt_opd", teachers=("teacher_c",), opad_mode=mode, batch_size=2,
                   opad_max_steps=3, record_topk=0, sampling={"max_new_tokens": 4})
    d = Distiller.from_config(cfg, task)
    rec = d.step()
    if mode == "teacher_forced":  # a batch of 2 holds exactly one episode's two steps
        assert len(rec.state_ids) == 2 and rec.state_ids[0].split("#")[0] == rec.state_ids[1].split("#")[0]
    else:  # 2 episodes x 2 steps, the later step states built from the student's actions
        assert len(rec.state_ids) == 4
        # the tiny random student never writes "call0()": its step-1 states are off the gold
        # path, have no reference, and are not verified against the gold action (issue 28.4)
        assert [c is None for c, sid in zip(rec.correct, rec.state_ids) if sid.endswith("#1")] == [True, True]
        assert all(c is not None for c, sid in zip(rec.correct, rec.state_ids) if sid.endswith("#0"))
    assert all("<|tool|>" in p for p, sid in zip(rec.prompts, rec.state_ids) if sid.endswith("#1"))
    ev = d.evaluate()
    assert {"step_accuracy", "episode_success", "accuracy"} <= set(ev)


def test_full_mode_drops_the_gold_reference_after_the_student_deviates():
    """Issue 28.4: once the student's action leaves the reference path, the states it reaches
    are not the gold path's, so the gold action is not their reference (before the fix every
    state kept refs[m]). The deviating step itself still has its reference (its history was on
    path); whitespace-only differences stay on path; the dropped states are counted."""
    ep = _episode(length=4)  # refs call0() .. call3()
    acts = {0: " call0() ", 1: "wrong()", 2: "call2()", 3: "call3()"}
    counters = {}
    run = rollout_episodes(ScriptedStudent(lambda s: acts[s.meta["step"]]), [ep], EchoEnv(length=4),
                           Sampling(), max_steps=4, counters=counters)[0]
    assert [s.reference for s in run.states] == ["call0()", "call1()", None, None]
    assert [s.meta["reference_valid"] for s in run.states] == [True, True, False, False]
    assert run.deviated_at == 1 and run.states[3].meta["deviated_at"] == 1
    assert counters["count/opad_reference_dropped"] == 2
    on_path = rollout_episodes(ScriptedStudent(lambda s: f"call{s.meta['step']}()"), [ep],
                               EchoEnv(length=4), Sampling(), max_steps=4, counters={})[0]
    assert [s.reference for s in on_path.states] == [f"call{j}()" for j in range(4)]
    assert on_path.deviated_at is None
    # teacher-forced states are always on the path
    assert all(s.meta["reference_valid"] for s in teacher_forced_states(ep, EchoEnv(length=4)))
