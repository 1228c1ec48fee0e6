"""BFCL multi-turn: gold transcripts pass the package's checker (run in the sandbox), broken ones
fail, the episode loop works with a scripted model, and model calls cannot touch the host."""

from __future__ import annotations

import ast
import json
import os
import uuid
from collections import Counter

import pytest

pytest.importorskip("bfcl_eval", reason="needs the 'bench' extra: pip install 'madopd[bench]'")

from madopd.bench.bfcl_multi_turn import MULTI_TURN, BFCLMultiTurnBenchmark, to_exec_list  # noqa: E402
from madopd.types import Sampling  # noqa: E402


@pytest.fixture(scope="module")
def mt():
    return BFCLMultiTurnBenchmark()


def test_gold_transcripts_pass_on_a_slice(mt):
    states = mt.states(2)
    assert [s.meta["category"] for s in states] == [c for c in MULTI_TURN for _ in range(2)]
    res = mt.score(states, [[mt.reference(s)] for s in states])
    assert res.summary["accuracy"] == {c: 1.0 for c in MULTI_TURN}, res.summary["error_types"]
    assert res.summary["multi_turn"] == 1.0


@pytest.mark.bench
def test_all_gold_transcripts_pass(mt):
    states = mt.states()
    assert len(states) == 800
    res = mt.score(states, [[mt.reference(s)] for s in states])
    assert res.summary["score"] == 1.0, res.summary["error_types"]


def _drop_last_call(gold: str) -> str:
    turns = json.loads(gold)
    for turn in reversed(turns):
        if turn and len(turn[0]["exec"]) > 0:
            turn[0]["exec"] = turn[0]["exec"][:-1]
            if not turn[0]["exec"]:
                turn.clear()
            break
    return json.dumps(turns)


def test_broken_transcripts_fail(mt):
    states = mt.states(1)[:2]
    broken = []
    for s in states:
        gold = mt.reference(s)
        broken.append([_drop_last_call(gold), json.dumps(json.loads(gold)[:-1]), "not json", "[1, 2]"])
    res = mt.score(states, broken)
    assert not any(r["correct"] for r in res.records)
    kinds = Counter(r["error_type"] for r in res.records if r["sample"] in (1, 2, 3))
    assert kinds == {"multi_turn:force_terminated": len(states),
                     "multi_turn:unparsable_transcript": 2 * len(states)}


class _Scripted:
    """Answers each turn with its gold calls in BFCL's format, then with plain text."""

    def __init__(self, states):
        self.gold = {s.messages[-1]["content"]: s.meta["ground_truth"] for s in states}

    def generate(self, chats, sampling):
        out = []
        for chat in chats:
            gold = self.gold[next(m["content"] for m in chat if m["role"] == "user")]
            turn = sum(m["role"] == "user" for m in chat) - 1
            if chat[-1]["role"] == "tool" or not gold[turn]:
                out.append("Done.")
            else:
                out.append("[" + ", ".join(gold[turn]) + "]")
        return out


def test_episode_loop_with_a_scripted_model_matches_the_gold(mt):
    def keyword_only(s):
        return all(not ast.parse(c, mode="eval").body.args for t in s.meta["ground_truth"] for c in t)

    states = [s for s in BFCLMultiTurnBenchmark(["multi_turn_base"]).states(12) if keyword_only(s)][:2]
    assert len(states) == 2
    transcripts = mt.interact(_Scripted(states), states, Sampling(greedy=True))
    res = mt.score(states, transcripts)
    assert res.summary["score"] == 1.0, res.summary["error_types"]
    first = json.loads(transcripts[0][0])
    assert len(first) == len(states[0].meta["ground_truth"]) and first[0][-1] == "Done."


def test_model_calls_run_in_the_sandbox_not_on_the_host(mt, tmp_path):
    target = tmp_path / f"pwned-{uuid.uuid4().hex}"
    state = mt.states(1)[0]

    class Evil:
        def generate(self, chats, sampling):
            if chats[0][-1]["role"] == "tool" or sum(m["role"] == "user" for m in chats[0]) > 1:
                return ["stop"] * len(chats)
            return [f"[open(file={str(target)!r}, mode='w')]"] * len(chats)

    transcripts = mt.interact(Evil(), [state], Sampling(greedy=True))
    assert not target.exists()  # BFCL would eval this call in the evaluating process
    res = mt.score([state], transcripts)
    assert res.records[0]["correct"] is False
    assert not os.path.exists(target)


def test_to_exec_list_mirrors_bfcl_execution_strings():
    assert to_exec_list("[cd(folder='a'), mv(source='x', destination='y')]") == [
        "cd(folder='a')", "mv(source='x', destination='y')"]
    assert to_exec_list("f(a=[1, {'k': 'v'}], b=g(c=1))") == ["f(a=[1, {'k': 'v'}], b=g(c=1))"]
