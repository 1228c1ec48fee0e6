"""One state-id scheme everywhere (issue 29.2): the ids the training loop records (OPAD's step
states) are the ids a task's own states and reference tables use, so a finder's references join."""

from __future__ import annotations

from madopd.distill.data import TrainPool
from madopd.opad import teacher_forced_states
from madopd.toyworld.toy_tools import ToyToolsTask
from madopd.types import step_state_id


def test_step_state_id_keeps_slashes_of_the_episode_id():
    assert step_state_id("tools/0/621", 2) == "tools/0/621#2"


def test_opad_states_and_task_states_share_ids_and_references():
    task = ToyToolsTask(n_train=12, n_eval=4, seed=0)
    task_refs = {s.id: s.reference for s in task.train_states()}
    pool = TrainPool(task, opad_mode="teacher_forced", batch_size=4, seed=0)  # what records store
    opad_refs = {s.id: s.reference for s in pool.items}
    assert opad_refs and set(opad_refs) == set(task_refs)
    assert opad_refs == task_refs  # the same gold action behind the same id
    for ep in task.train_episodes()[:3]:
        assert [s.id for s in teacher_forced_states(ep, task.environment)] == \
            [s.id for s in task.states_of(ep)]
