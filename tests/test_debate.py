"""Debate engine: visibility, layout, batching, JSON, failure policies, real tiny teachers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madopd.debate import (
    TEMPLATES,
    Debate,
    DebateProtocol,
    DebateTemplates,
    FailedTurn,
    is_failed,
    transcript_from_dict,
    transcript_from_json,
    transcript_to_dict,
    transcript_to_json,
)
from madopd.errors import ConfigError, DataError, ShapeError, TeacherError
from madopd.types import DebateMessage, Sampling, State, Transcript

SENTINEL = "STUDENT-ANSWER-SENTINEL-7f3a"


def _states(n=2):
    return [State(f"s{i}", [{"role": "user", "content": f"question {i}: what is {i}+{i}?"}],
                  meta={"student_answer": SENTINEL}) for i in range(n)]


class FakeTeacher:
    """Replies '<name> r<round> on <state>' + a tag; records every chat it is sent."""

    def __init__(self, name=None, *, fail_rounds=(), reply=None, exc=TeacherError):
        self.name = name
        self.calls: list[list] = []
        self.fail_rounds, self.exc = set(fail_rounds), exc
        self.reply = reply or (lambda chat, n: f"{self.name} r{n} on {chat[-2]['content'][:10]}\n"
                               "<<CONFIDENCE=70>>")
        self.counters = {"truncated_prompts": 0}

    def generate(self, chats, sampling):
        self.calls.append(chats)
        n = len(self.calls)
        if n in self.fail_rounds:
            raise self.exc(f"{self.name} is down")
        return [self.reply(chat, n) for chat in chats]


def _all_text(chat) -> str:
    return "\n".join(m["content"] for m in chat)


# --------------------------------------------------------------------------- real tiny models

@pytest.fixture(scope="module")
def tiny_teachers(tiny_dirs):
    from madopd.models.hf import HFTeacher

    return [HFTeacher(tiny_dirs[n]) for n in ("teacher_a", "teacher_b", "teacher_c")]


def _spy(teacher, log):
    orig = teacher.generate

    def generate(chats, sampling):
        log.append((teacher.name, chats))
        return orig(chats, sampling)

    teacher.generate = generate
    return orig


def test_real_debate_visibility_and_layout(tiny_teachers):
    log: list = []
    origs = [_spy(t, log) for t in tiny_teachers]
    try:
        proto = DebateProtocol(rounds=2, sampling=Sampling(max_new_tokens=12, seed=0))
        debate = Debate(tiny_teachers, proto)
        states = _states(2)
        trs = debate.run(states)
    finally:
        for t, o in zip(tiny_teachers, origs):
            t.generate = o
    assert debate.names == ["teacher_a", "teacher_b", "teacher_c"]
    assert len(log) == 6  # one generate call per teacher per round, all states batched
    assert all(len(chats) == 2 for _, chats in log)
    for tr in trs:
        assert len(tr.messages) == 6 and tr.rounds == 2
        assert {(m.round, m.teacher) for m in tr.messages} == {(r, k) for r in (1, 2) for k in range(3)}
    # Round 1 is blind: exactly state.messages + the round-1 cue.
    for k, (_, chats) in enumerate(log[:3]):
        for b, chat in enumerate(chats):
            cue = TEMPLATES["general"].round1.format(name=debate.names[k], round=1, num_teachers=3)
            assert chat == states[b].messages + [{"role": "user", "content": cue}]
    # Round 2 sees every round-1 turn, rendered.
    for k, (_, chats) in enumerate(log[3:]):
        for b, chat in enumerate(chats):
            assert chat[:-1] == states[b].messages
            assert f"You are {debate.names[k]}." in chat[-1]["content"]
            for m in trs[b].messages:
                if m.round == 1:
                    assert debate.render_turn(trs[b], m) in chat[-1]["content"]
    # The student's answer never reaches a teacher (debate prompts and scoring contexts).
    prompts = [c for _, chats in log for c in chats]
    prompts += [debate.score_context(s, tr, k) for s, tr in zip(states, trs) for k in range(3)]
    assert not any(SENTINEL in _all_text(c) for c in prompts)
    # Transcripts of real (gibberish) generations round-trip through JSON.
    for tr in trs:
        assert transcript_from_json(json.loads(json.dumps(transcript_to_json(tr)))) == tr
    assert debate.counters["debate/turns"] == 12 and debate.counters["debate/generate_calls"] == 6


def test_real_debate_zero_rounds_and_truncation_counter(tiny_dirs, tiny_teachers):
    from madopd.models.hf import HFTeacher

    trs = Debate(tiny_teachers, DebateProtocol(rounds=0)).run(_states(2))
    assert [len(t.messages) for t in trs] == [0, 0] and all(t.rounds == 0 for t in trs)
    short = HFTeacher(tiny_dirs["teacher_c"], name="short", max_context=40)
    debate = Debate([short, tiny_teachers[0]], DebateProtocol(
        rounds=1, sampling=Sampling(max_new_tokens=8, seed=1)))
    debate.run(_states(2))  # prompts are > 32 tokens: the teacher's "left" policy cuts them
    assert debate.counters["debate/truncated_contexts"] == 2


# --------------------------------------------------------------------------- layout

def test_prompt_layout_system_merge_and_empty_templates():
    tpl = DebateTemplates(system="SYS {name}/{num_teachers}", round1="R1 {name}",
                          revise="REV {round} own=[{own_last}] peers=[{peers_last}]",
                          score="SCORE {round}\n{transcript}", score_blind="",
                          turn="<{name}|{round}|{answer}|{confidence}>")
    d = Debate([FakeTeacher("A"), FakeTeacher("B")], DebateProtocol(rounds=1, templates=tpl))
    s = State("x", [{"role": "user", "content": "Q"}])
    assert d.prompt(s, None, 1, 1) == [{"role": "system", "content": "SYS B/2"},
                                       {"role": "user", "content": "Q"},
                                       {"role": "user", "content": "R1 B"}]
    tools = State("y", [{"role": "system", "content": "TOOLS"}, {"role": "user", "content": "Q"}])
    assert d.prompt(tools, None, 0, 1)[0] == {"role": "system", "content": "SYS A/2\n\nTOOLS"}
    assert tools.messages[0]["content"] == "TOOLS"  # the state is not mutated
    tr = Transcript("x", ["A", "B"], 1, [
        DebateMessage(0, 1, "a1 <<CONFIDENCE=80>>", "a1", 80.0),
        DebateMessage(1, 1, "b1", "b1", None)])
    assert d.prompt(s, tr, 0, 2)[-1]["content"] == "REV 2 own=[a1] peers=[<B|1|b1|not stated>]"
    assert d.score_context(s, tr, 1)[-1]["content"] == "SCORE 1\n<A|1|a1|80>\n\n<B|1|b1|not stated>"
    # score_blind "" and R = 0: the teacher sees exactly [system] + the student's prompt.
    assert d.score_context(s, None, 0) == [{"role": "system", "content": "SYS A/2"}, s.messages[0]]
    assert d.score_context(s, Transcript("x", ["A", "B"], 0), 0) == d.score_context(s, None, 0)
    bare = Debate([FakeTeacher("A")], DebateProtocol(rounds=0))
    assert bare.score_context(s, None, 0) == s.messages  # presets: no system, blind score = prompt
    with pytest.raises(ShapeError, match="round 2"):
        d.prompt(s, Transcript("x", ["A", "B"], 0), 0, 3)
    with pytest.raises(ShapeError):
        d.prompt(s, None, 0, 2)


def test_failed_turns_are_left_out_of_rendering():
    tpl = DebateTemplates(round1="R1", revise="{transcript}|{own_last}|{peers_last}", score="S",
                          turn="{name}:{answer}")
    d = Debate([FakeTeacher("A"), FakeTeacher("B")], DebateProtocol(templates=tpl))
    tr = Transcript("x", ["A", "B"], 1, [FailedTurn(0, 1, "", "", None, error="boom"),
                                          DebateMessage(1, 1, "b", "b", None)])
    assert d.prompt(_states(1)[0], tr, 0, 2)[-1]["content"] == "B:b||B:b"


def test_templates_validate_placeholders():
    with pytest.raises(ConfigError, match="round1.*student"):
        DebateTemplates(round1="{student}", revise="", score="")
    with pytest.raises(ConfigError, match="score_blind.*transcript"):
        DebateTemplates(round1="", revise="", score="", score_blind="{transcript}")
    with pytest.raises(ConfigError, match="braces"):
        DebateTemplates(round1="{", revise="", score="")
    DebateTemplates(round1='JSON: {{"a": 1}}', revise="", score="")  # escaped braces are fine
    for name, tpl in TEMPLATES.items():
        assert "<<CONFIDENCE=N>>" in tpl.round1 and "<<CONFIDENCE=N>>" in tpl.revise, name
        assert "confidence tag" in tpl.score and "last line" in tpl.round1
    with pytest.raises(ConfigError, match="preset"):
        DebateProtocol(templates="poetry")
    for bad in (dict(rounds=-1), dict(rounds=1.5), dict(on_teacher_error="ignore"),
                dict(on_missing_confidence="half"), dict(sampling={"temperature": 1})):
        with pytest.raises(ConfigError):
            DebateProtocol(**bad)
    with pytest.raises(ConfigError):
        Debate([], DebateProtocol())


def test_names_default_and_duplicates():
    assert Debate([FakeTeacher(), FakeTeacher()]).names == ["T1", "T2"]
    assert Debate([FakeTeacher("x"), FakeTeacher("y")]).names == ["x", "y"]
    same = FakeTeacher("m")
    assert Debate([same, same]).names == ["T1", "T2"]  # self-debate of one model
    assert Debate([FakeTeacher(), FakeTeacher()], names=["p", "q"]).names == ["p", "q"]
    with pytest.raises(ConfigError):
        Debate([FakeTeacher(), FakeTeacher()], names=["p", "p"])


# --------------------------------------------------------------------------- running

def test_stepwise_rounds_equal_run_and_inputs_are_not_mutated():
    states = _states(3)
    proto = DebateProtocol(rounds=3)
    full = Debate([FakeTeacher("A"), FakeTeacher("B")], proto).run(states)
    d = Debate([FakeTeacher("A"), FakeTeacher("B")], proto)
    t1 = d.round(1, states)
    t2 = d.round(2, states, t1)
    assert all(len(t.messages) == 2 and t.rounds == 1 for t in t1)  # unchanged by round 2
    t3 = d.round(3, states, t2)
    assert t3 == full
    with pytest.raises(ShapeError, match="before round 3"):
        d.round(3, states, t1)
    with pytest.raises(ShapeError):
        d.round(2, states, None)
    assert d.run([]) == [] and d.counters["debate/generate_calls"] == 6  # no call for no states
    par = Debate([FakeTeacher("A"), FakeTeacher("B")],
                 DebateProtocol(rounds=3, parallel_teachers=True)).run(states)
    assert par == full


def test_seed_is_offset_per_round_and_teacher():
    seen = []

    class Rec(FakeTeacher):
        def generate(self, chats, sampling):
            seen.append((self.name, sampling.seed))
            return super().generate(chats, sampling)

    Debate([Rec("A"), Rec("B")], DebateProtocol(rounds=2, sampling=Sampling(seed=5))).run(_states(1))
    assert len({s for _, s in seen}) == 4
    seen.clear()
    Debate([Rec("A")], DebateProtocol(rounds=1, sampling=Sampling(seed=None))).run(_states(1))
    assert seen == [("A", None)]


def test_single_teacher_self_refinement():
    t = FakeTeacher("solo")
    trs = Debate([t], DebateProtocol(rounds=2)).run(_states(1))
    assert len(trs[0].messages) == 2
    assert "solo r1" in t.calls[1][0][-1]["content"]  # it revises its own previous answer


# --------------------------------------------------------------------------- faults

def test_teacher_error_raise_names_teacher_and_round():
    d = Debate([FakeTeacher("A"), FakeTeacher("B", fail_rounds={2})], DebateProtocol(rounds=2))
    with pytest.raises(TeacherError, match=r"round 2: teacher 'B' \(index 1\).*B is down"):
        d.run(_states(2))
    d = Debate([FakeTeacher("A", fail_rounds={1}, exc=TimeoutError)], DebateProtocol(rounds=1))
    with pytest.raises(TeacherError, match="round 1.*TimeoutError"):
        d.run(_states(1))
    bug = Debate([FakeTeacher("A", fail_rounds={1}, exc=KeyError)], DebateProtocol(
        rounds=1, on_teacher_error="drop_teacher"))
    with pytest.raises(KeyError):  # programming errors are never swallowed
        bug.run(_states(1))


def test_teacher_error_drop_teacher_records_failed_turns():
    d = Debate([FakeTeacher("A"), FakeTeacher("B", fail_rounds={1})],
               DebateProtocol(rounds=2, on_teacher_error="drop_teacher"))
    trs = d.run(_states(2))
    for tr in trs:
        bad = tr.turn(1, 1)
        assert is_failed(bad) and bad.text == "" and bad.confidence is None and "down" in bad.error
        assert not is_failed(tr.turn(1, 2)) and not is_failed(tr.turn(0, 1))
    c = d.counters
    assert c["debate/teacher_errors"] == 1 and c["debate/failed_turns"] == 2
    assert d.errors == [{"round": 1, "teacher": 1, "name": "B", "error": "TeacherError: B is down"}]
    assert transcript_from_json(transcript_to_json(trs[0])) == trs[0]  # flag survives JSON
    # A wrong number of replies is a teacher failure too.
    short = FakeTeacher("S", reply=None)
    short.generate = lambda chats, sampling: ["only one"]
    d = Debate([short], DebateProtocol(rounds=1, on_teacher_error="drop_teacher"))
    d.run(_states(2))
    assert d.counters["debate/failed_turns"] == 2 and "expected a list of 2 str" in d.errors[0]["error"]


def test_real_server_backend_down_or_hanging():
    """A real VLLMServerTeacher against a closed port and a server that never answers."""
    import socket

    from madopd.models.tiny import build_tokenizer
    from madopd.models.vllm_server import VLLMServerTeacher, free_port

    tok = build_tokenizer()
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts TCP connections, never replies
    try:
        down = VLLMServerTeacher(f"http://127.0.0.1:{free_port()}", "m", tokenizer=tok,
                                 name="down", retries=0, max_context=4096)
        slow = VLLMServerTeacher(f"http://127.0.0.1:{hang.getsockname()[1]}", "m", tokenizer=tok,
                                 name="slow", retries=0, timeout=0.3, max_context=4096)
        d = Debate([down, slow, FakeTeacher("ok")],
                   DebateProtocol(rounds=1, on_teacher_error="drop_teacher"))
        trs = d.run(_states(1))
        assert [is_failed(m) for m in trs[0].messages] == [True, True, False]
        assert d.counters["debate/teacher_errors"] == 2 and d.counters["debate/failed_turns"] == 2
        assert [e["name"] for e in d.errors] == ["down", "slow"]
        with pytest.raises(TeacherError, match="round 1: teacher 'slow'"):
            Debate([slow], DebateProtocol(rounds=1)).run(_states(1))
        dropper = VLLMServerTeacher(f"http://127.0.0.1:{free_port()}", "m", tokenizer=tok,
                                    name="dropper", retries=0, on_failure="drop", max_context=4096)
        d = Debate([dropper], DebateProtocol(rounds=1, on_teacher_error="drop_teacher"))
        d.run(_states(2))
        assert d.counters["debate/failed_turns"] == 2 and "dropped the batch" in d.errors[0]["error"]
    finally:
        hang.close()


def test_empty_and_malformed_generations_are_counted_never_guessed():
    replies = iter(["", "no tag at all", "<<CONFIDENCE=abc>>", "x <<CONFIDENCE=250>>"])
    t = FakeTeacher("A", reply=lambda chat, n: next(replies))
    d = Debate([t, FakeTeacher("B")], DebateProtocol(rounds=1))
    trs = d.run(_states(4))
    c = d.counters
    assert (c["debate/empty_turns"], c["debate/absent_confidence"], c["debate/malformed_confidence"],
            c["debate/clamped_confidence"]) == (1, 2, 1, 1)
    assert [tr.turn(0, 1).confidence for tr in trs] == [None, None, None, 100.0]
    w = d.weights(trs)
    assert w.counters["weights/uniform_fallback"] == 3  # policy decided and counted
    skip = Debate([FakeTeacher("A"), FakeTeacher("B")],
                  DebateProtocol(rounds=1, on_missing_confidence="skip_sample")).weights(trs)
    assert skip.keep.tolist() == [False, False, False, True]


# --------------------------------------------------------------------------- JSON

UNTRUSTED = ['he said "hi"\nand left', "<script>alert(1)</script>", "ünïcødé ✓ 中文 🙂",
             "back\\slash\t\x00nul", "{transcript} {{braces}}", "\u2028line sep"]


def test_json_round_trip_untrusted_text():
    msgs = [DebateMessage(k, r, text, text.strip(), [None, 0.0, 55.5][k % 3])
            for r in (1, 2) for k, text in enumerate(UNTRUSTED[:3])]
    msgs.append(FailedTurn(0, 3, "", "", None, error='Timeout "x" <b>'))
    tr = Transcript('state "1" <script>', ["A\n", "<b>B</b>", "ç"], 3, msgs[:6] + msgs[6:])
    tr.messages += [DebateMessage(k, 3, t, t, 1.0) for k, t in ((1, UNTRUSTED[3]), (2, UNTRUSTED[5]))]
    back = transcript_from_json(transcript_to_json(tr))
    assert back == tr and type(back.messages[6]) is FailedTurn
    assert type(back.messages[0]) is DebateMessage
    assert transcript_from_dict(json.loads(json.dumps(transcript_to_dict(tr), ensure_ascii=True))) == tr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(), st.one_of(st.none(), st.floats(0, 100))), min_size=1, max_size=4),
       st.text())
def test_json_round_trip_property(turns, sid):
    tr = Transcript(sid, [f"T{k}" for k in range(len(turns))], 1,
                    [DebateMessage(k, 1, t, t.strip(), c) for k, (t, c) in enumerate(turns)])
    assert transcript_from_json(transcript_to_json(tr)) == tr


def test_json_errors_name_the_field():
    good = transcript_to_dict(Transcript("s", ["A"], 1, [DebateMessage(0, 1, "t", "t", 5.0)]))
    cases = [({"rounds": "1"}, "rounds"), ({"format": "v0"}, "format"),
             ({"messages": [{**good["messages"][0], "confidence": 101}]}, "confidence"),
             ({"messages": [{**good["messages"][0], "teacher": 3}]}, "teacher"),
             ({"messages": [{**good["messages"][0], "round": True}]}, "round"),
             ({"messages": [{"teacher": 0}]}, "confidence")]
    for patch, fld in cases:
        with pytest.raises(DataError, match=fld) as e:
            transcript_from_dict({**good, **patch})
        assert e.value.field == fld
    with pytest.raises(DataError):
        transcript_from_json("{not json")


@pytest.mark.slow
def test_docs_example_runs():
    """docs/debate-example.md: every python block runs; the pasted output is what it prints."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "debate-example.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    outputs = re.findall(r"```text\n(.*?)```", doc, re.S)
    assert len(blocks) == len(outputs) == 2
    for code, expected in zip(blocks, outputs):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.rstrip() == expected.rstrip()
