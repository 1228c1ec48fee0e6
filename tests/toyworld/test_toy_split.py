"""The toy world's one split rule (issue 13.1): no held-out item reaches any training set.

Training sets checked: every zoo member's training states (teachers: sloppy-policy + gold tool
states and code specs; the Base student: its SFT states), and the distillation pool
(``TrainPool``) the demo's runs draw from. Held-out sets checked: the demo's (n_eval = 250,
``ZooSpec.eval_episodes``) and the zoo report's (its first 60 episodes).
"""

from __future__ import annotations

import random

import pytest

from madopd.distill.data import TrainPool
from madopd.errors import ConfigError
from madopd.toyworld.toy_code import ToyCodeTask
from madopd.toyworld.toy_common import is_held_out
from madopd.toyworld.toy_tools import ToyToolsTask
from madopd.toyworld.zoo import PROFILES, make_tasks, member_settings
from madopd.toyworld.zoo_train import training_states


def tool_item(state) -> tuple:
    m = state.meta
    return (state.family, m["p"], m["q"], m["values"][m["p"]], m["values"][m["q"]])


def code_item(state) -> tuple:
    return (state.family, state.meta["c"])


def test_split_does_not_depend_on_how_many_items_are_asked_for():
    small = ToyToolsTask(n_train=300, n_eval=1)
    big = ToyToolsTask(n_train=100, n_eval=250)
    sig = ToyToolsTask.signature
    assert [sig(e) for e in big.train_episodes()] == [sig(e) for e in small.train_episodes()][:100]
    assert sig(small.eval_episodes()[0]) == sig(big.eval_episodes()[0])
    assert not {sig(e) for e in small.train_episodes()} & {sig(e) for e in big.eval_episodes()}
    for ep in big.eval_episodes():
        assert is_held_out("toy-tools", repr(sig(ep)))
    for ep in small.train_episodes():
        assert not is_held_out("toy-tools", repr(sig(ep)))
    with pytest.raises(ConfigError, match="unknown toy task"):
        is_held_out("toy-chess", "x")


@pytest.mark.parametrize("member", ["A", "B", "student"])
def test_no_evaluation_item_in_any_zoo_members_training_states(member):
    spec = PROFILES["default"]
    settings = member_settings(spec, member)
    states, _ = training_states(settings, random.Random(0))
    tools, code = make_tasks(spec)  # what the demo evaluates on
    held_tools = {ToyToolsTask.signature(e) for e in tools.eval_episodes()}
    held_code = {code_item(s) for s in code.eval_states()}
    assert len(held_tools) == spec.eval_episodes and len(held_code) > 100
    trained_tools = {tool_item(s) for s in states["toy-tools"]}
    trained_code = {code_item(s) for s in states["toy-code"]}
    assert len(trained_tools) >= spec.tool_episodes
    assert not trained_tools & held_tools
    assert not trained_code & held_code


def test_no_evaluation_item_in_the_distillation_pool():
    tools, code = make_tasks(PROFILES["default"])
    held_tools = {ToyToolsTask.signature(e) for e in tools.eval_episodes()}
    pool = TrainPool(tools, opad_mode="teacher_forced", batch_size=8, seed=0).items
    by_id = {e.id: e for e in (*tools.train_episodes(), *tools.eval_episodes())}
    pooled = {ToyToolsTask.signature(by_id[s.meta["episode_id"]]) for s in pool}
    assert pool and not pooled & held_tools
    pool = TrainPool(code, opad_mode="teacher_forced", batch_size=8, seed=0).items
    assert pool and not {code_item(s) for s in pool} & {code_item(s) for s in code.eval_states()}
    # the code split is the same object whoever builds it
    assert [s.id for s in ToyCodeTask().eval_states()] == [s.id for s in code.eval_states()]
