"""toy-tools: the simulated world, the recovering oracle, metrics and the held-out split."""

from __future__ import annotations

import pytest

from madopd.errors import ConfigError
from madopd.tasks.base import EpisodicTask
from madopd.toyworld.toy_common import FAMILIES
from madopd.toyworld.toy_tools import ToyToolsTask, oracle_action


@pytest.fixture(scope="module")
def task():
    return ToyToolsTask(n_train=200, n_eval=50)


def test_protocol_and_disjoint_split(task):
    assert isinstance(task, EpisodicTask)
    sig = lambda e: (e.messages[0]["content"], e.meta["values"][e.meta["p"]], e.meta["values"][e.meta["q"]])
    assert not {sig(e) for e in task.train_episodes()} & {sig(e) for e in task.eval_episodes()}
    assert len(task.eval_episodes()) == 50 and len(task.train_episodes()) == 200


def test_gold_path_is_four_steps_and_succeeds(task):
    for ep in task.eval_episodes():
        acts = ep.reference_actions
        assert len(acts) == 4 and acts[0].startswith("get ") and acts[-1].startswith("ans ")
        history, correct = task.run_episode(ep, lambda h, ep=ep: oracle_action(ep, h, ep.family))
        assert all(correct) and task.episode_success(ep, history)


def test_wrong_operation_compounds_and_oracle_recovers(task):
    ep = next(e for e in task.eval_episodes() if e.family == "max")
    wrong = FAMILIES["max"].wrong
    history, correct = task.run_episode(ep, lambda h: oracle_action(ep, h, wrong))
    assert correct == [True, True, False, False]  # the swapped op, then answering its result
    assert not task.episode_success(ep, history)
    # after the wrong call the gold policy asks for the right operation, then answers
    h = history[:-1]
    assert oracle_action(ep, h, "max").startswith("max ")


def test_environment_never_raises_on_junk(task):
    ep = task.eval_episodes()[0]
    h = list(ep.messages)
    for junk in ["", "get", "get zz", "pow 1 2", "ans", "<<CONFIDENCE=9>>", "add 1 x", "\x00"]:
        obs, done = task.environment.step(ep, h, junk)
        assert obs == "err" and not done
    obs, done = task.environment.step(ep, h, "ans 5")
    assert obs is None and done


def test_max_steps_cuts_the_episode(task):
    ep = task.eval_episodes()[0]
    history, correct = task.run_episode(ep, lambda h: "get a")
    assert len(correct) == task.max_steps and not task.episode_success(ep, history)


def test_step_states_and_verify(task):
    states = task.eval_states()
    assert len(states) == 4 * 50
    assert all(task.verify(s, s.reference) == 1.0 for s in states)
    s = states[2]
    assert task.verify(s, task.answer_with(s, FAMILIES[s.family].wrong)) == 0.0
    assert task.verify(s, None) == 0.0


def test_bad_config():
    with pytest.raises(ConfigError, match="max_steps"):
        ToyToolsTask(max_steps=2)
    with pytest.raises(ConfigError, match="families"):
        ToyToolsTask(families=("nope",))
