"""A full debate through a REAL vLLM server (marker ``vllm``; needs .ci/setup_vllm.sh).

Lives under tests/models to reuse the session's ``vllm_server`` fixture (one server per run).
Mixed backends on purpose: two VLLMServerTeachers and one HFTeacher of the same checkpoint.
"""

from __future__ import annotations

import pytest

from madopd.debate import (
    Debate,
    DebateProtocol,
    DebateTemplates,
    transcript_from_json,
    transcript_to_json,
)
from madopd.types import Sampling, State

SENTINEL = "STUDENT-ANSWER-SENTINEL-vllm"
# Compact wording: the fixture's model has a 512-token window and a byte-level tokenizer; the
# preset wording would overflow it in round 2, and then every teacher would left-truncate its
# prompt (counted) instead of seeing the whole round-1 transcript that this test checks.
COMPACT = DebateTemplates(round1="{name}: answer, end with <<CONFIDENCE=N>>",
                          revise="{transcript}\n{name}, revise:", score="{transcript}\nBest:",
                          turn="{name}/{round}: {answer}")


@pytest.mark.vllm
def test_full_debate_through_vllm_server(vllm_server):
    from madopd.models import HFTeacher, VLLMServerTeacher

    base_url, model_dir = vllm_server
    teachers = [VLLMServerTeacher(base_url, model_dir, tokenizer=model_dir, name="v1"),
                VLLMServerTeacher(base_url, model_dir, tokenizer=model_dir, name="v2"),
                HFTeacher(model_dir, name="hf", max_context=512)]
    log = []
    for t in teachers:
        orig = t.generate
        t.generate = (lambda o, n: lambda chats, s: (log.append((n, chats)), o(chats, s))[1])(orig, t.name)
    states = [State(f"s{i}", [{"role": "user", "content": f"What is {i} + {i}?"}],
                    meta={"student_answer": SENTINEL}) for i in range(2)]
    debate = Debate(teachers, DebateProtocol(rounds=2, templates=COMPACT,
                                                   sampling=Sampling(max_new_tokens=16, seed=3)))
    trs = debate.run(states)
    assert len(log) == 6 and all(len(chats) == 2 for _, chats in log)
    for b, tr in enumerate(trs):
        assert len(tr.messages) == 6 and tr.rounds == 2
        assert transcript_from_json(transcript_to_json(tr)) == tr
        for _, chats in log[:3]:  # round 1: blind
            assert chats[b][:-1] == states[b].messages and "/1: " not in chats[b][-1]["content"]
        for _, chats in log[3:]:  # round 2: every round-1 turn is visible
            for m in tr.messages:
                if m.round == 1:
                    assert debate.render_turn(tr, m) in chats[b][-1]["content"]
    assert not any(SENTINEL in m["content"] for _, chats in log for c in chats for m in c)
    assert debate.counters["debate/teacher_errors"] == 0
    assert debate.counters["debate/truncated_contexts"] == 0  # every teacher saw its whole chat
    assert sum(t.counters["requests"] for t in teachers[:2]) >= 8  # 2 teachers x 2 rounds x 2 states
