"""JSONL loaders: ToolACE-style episodes, replay environment, code prompts, bad rows."""

from __future__ import annotations

import json

import pytest

from madopd.errors import DataError
from madopd.opad import rollout_episodes, teacher_forced_states
from madopd.tasks import get_task
from madopd.tasks.jsonl import (
    CodeJsonlTask,
    ReplayEnvironment,
    ToolJsonlTask,
    extract_code,
    load_code_prompts,
    load_tool_episodes,
)
from madopd.types import Samples, Sampling

TOOL_ROW = {
    "id": "t1", "system": "Tools: get_weather(city)",
    "conversations": [
        {"from": "user", "value": "Weather in Paris?"},
        {"from": "assistant", "value": "[get_weather(city='Paris')]"},
        {"from": "tool", "value": "{\"temp\": 21}"},
        {"from": "assistant", "value": "It is 21 degrees."},
        {"from": "user", "value": "And Rome?"},
        {"from": "assistant", "value": "[get_weather(city='Rome')]"},
        {"from": "tool", "value": "{\"temp\": 25}"},
        {"from": "assistant", "value": "25 degrees."},
    ],
}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_tool_rows_become_episodes(tmp_path):
    alt = {"messages": [{"role": "human", "content": "hi"}, {"role": "gpt", "content": "hello"}]}
    eps = load_tool_episodes(_write(tmp_path / "t.jsonl", [TOOL_ROW, alt]))
    ep = eps[0]
    assert ep.id == "t1" and eps[1].id == "t-2"  # missing id -> file stem + line
    assert ep.messages == [{"role": "system", "content": "Tools: get_weather(city)"},
                           {"role": "user", "content": "Weather in Paris?"}]
    assert ep.reference_actions == ["[get_weather(city='Paris')]", "It is 21 degrees.",
                                    "[get_weather(city='Rome')]", "25 degrees."]
    assert ep.meta["recorded"][1] == [{"role": "user", "content": "And Rome?"}]
    states = teacher_forced_states(ep, ReplayEnvironment())
    assert len(states) == 4
    assert states[2].messages[-3:] == [
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "assistant", "content": "It is 21 degrees."},
        {"role": "user", "content": "And Rome?"}]


@pytest.mark.parametrize("row,line_field", [
    ("{not json", (2, None)),
    ("[1, 2]", (2, None)),
    ({"id": "x"}, (2, "conversations")),
    ({"conversations": [{"from": "robot", "value": "x"}]}, (2, "conversations[0].from")),
    ({"conversations": [{"from": "user", "value": 3}]}, (2, "conversations[0].value")),
    ({"conversations": [{"from": "user", "value": "only a question"}]}, (2, "conversations")),
    ({"id": True, "conversations": TOOL_ROW["conversations"]}, (2, "id")),
    ({"system": 5, "conversations": TOOL_ROW["conversations"]}, (2, "system")),
])
def test_malformed_tool_rows_name_file_line_and_field(tmp_path, row, line_field):
    path = _write(tmp_path / "bad.jsonl", [TOOL_ROW, row])
    with pytest.raises(DataError) as err:
        load_tool_episodes(path)
    assert err.value.path == str(path) and (err.value.line, err.value.field) == line_field
    assert "bad.jsonl" in str(err.value) and "line 2" in str(err.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    for loader in (load_tool_episodes, load_code_prompts):
        with pytest.raises(DataError, match="empty"):
            loader(empty)
        with pytest.raises(DataError, match="does not exist"):
            loader(tmp_path / "nope.jsonl")


def test_duplicate_ids(tmp_path):
    with pytest.raises(DataError, match="duplicate"):
        load_tool_episodes(_write(tmp_path / "d.jsonl", [TOOL_ROW, TOOL_ROW]))


class Scripted:
    def __init__(self, texts):
        self.texts = texts

    def rollout(self, states, sampling):
        m = states[0].meta["step"]
        t = self.texts[m]
        return Samples([[1]], [[2]], [t], [False])


def test_replay_environment_counts_mismatches(tmp_path):
    ep = load_tool_episodes(_write(tmp_path / "t.jsonl", [TOOL_ROW]))[0]
    env = ReplayEnvironment()
    acts = ["[get_weather(city='Paris')]", "wrong", "[get_weather(city='Rome')]", "25 degrees."]
    counters = {}
    runs = rollout_episodes(Scripted(acts), [ep], env, Sampling(), max_steps=6, counters=counters)
    assert runs[0].done and len(runs[0].actions) == 4
    assert counters["count/replay_mismatch"] == 1 and env.counters["replay_mismatch"] == 1
    # the replay answered the wrong action with the recorded observation anyway
    assert runs[0].states[2].messages[-1] == {"role": "user", "content": "And Rome?"}
    obs, done = env.step(ep, ep.messages, acts[0])
    assert obs == "{\"temp\": 21}" and not done


def test_tool_task_and_registry(tmp_path):
    rows = [dict(TOOL_ROW, id=f"t{i}") for i in range(10)]
    path = _write(tmp_path / "tools.jsonl", rows)
    task = get_task(f"jsonl-tools:{path}")
    assert isinstance(task, ToolJsonlTask) and task.kind == "agentic"
    assert len(task.train_episodes()) == 9 and len(task.eval_episodes()) == 1
    assert len(task.train_states()) == 36
    ep = task.eval_episodes()[0]
    assert task.step_correct(ep, ep.messages, " [get_weather(city='Paris')] ")
    assert not task.step_correct(ep, ep.messages, "[get_weather(city='Lyon')]")


CODE_ROWS = [
    {"id": "c1", "prompt": "Write add(a, b).", "tests": "assert add(1, 2) == 3",
     "entry_point": "add"},
    {"id": 2, "prompt": "Write neg(x).",
     "tests": ["def check(f):\n    assert f(1) == -1"], "entry_point": "neg"},
    {"prompt": "No tests here."},
]


def test_code_prompts_through_datasets(tmp_path):
    states = load_code_prompts(_write(tmp_path / "code.jsonl", CODE_ROWS))
    assert [s.id for s in states] == ["c1", "2", "code-3"]
    assert states[0].messages == [{"role": "user", "content": "Write add(a, b)."}]
    assert states[1].meta["tests"] == ["def check(f):\n    assert f(1) == -1"]
    assert states[2].meta["tests"] == [] and states[2].meta["entry_point"] is None


@pytest.mark.parametrize("row,field", [
    ({"id": "x"}, "prompt"), ({"prompt": "  "}, "prompt"), ({"prompt": "p", "tests": 3}, "tests"),
    ({"prompt": "p", "tests": ["a", 1]}, "tests"), ({"prompt": "p", "entry_point": "1x"}, "entry_point"),
])
def test_malformed_code_rows(tmp_path, row, field):
    with pytest.raises(DataError) as err:
        load_code_prompts(_write(tmp_path / "c.jsonl", [CODE_ROWS[0], row]))
    assert (err.value.line, err.value.field) == (2, field)


def test_code_task_verifies_in_the_sandbox(tmp_path):
    task = CodeJsonlTask(_write(tmp_path / "code.jsonl", CODE_ROWS), eval_fraction=0.0)
    add, neg, none = task.train_states()
    assert task.verify(add, "```python\ndef add(a, b):\n    return a + b\n```") == 1.0
    assert task.verify(add, "def add(a, b):\n    return a - b") == 0.0
    assert task.verify(neg, "def neg(x):\n    return -x") == 1.0  # check(neg) is appended
    assert task.verify(none, "anything") == 0.0 and task.counters["no_tests"] == 1
    assert extract_code("a\n```py\nx = 1\n```\nb\n```python\ny = 2\n```") == "y = 2\n"
