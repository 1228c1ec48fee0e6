"""The real-calls task: split, verifier (AST parse, never executes), data file."""

from __future__ import annotations

from madopd.realworld.calls import RealCallsTask, parse_call


def test_split_and_states():
    t = RealCallsTask()
    train, ev = t.train_states(), t.eval_states()
    assert len(train) == 32 and len(ev) == 16
    assert not {s.id for s in train} & {s.id for s in ev}
    assert {s.family for s in ev} == {s.family for s in train}
    s = ev[0]
    assert s.messages[-1]["role"] == "user" and s.reference.split("(")[0] in s.messages[-1]["content"]
    shots = [m["content"] for m in s.messages if m["role"] == "assistant"]
    assert len(shots) == 3 and s.reference not in shots  # other rows' calls of the same function
    held = {r["call"] for r in t.rows if t.is_held_out(r)}
    for st in train + ev:  # no prompt shows a held-out call
        assert not held & {m["content"] for m in st.messages if m["role"] == "assistant"}
    old = RealCallsTask(prompt="system").eval_states()[0]
    assert old.messages[0]["role"] == "system" and s.reference not in old.messages[0]["content"]


def test_verify_exact_match_and_hostile_text():
    t = RealCallsTask()
    s = t.eval_states()[0]
    assert t.verify(s, s.reference) == 1.0
    assert t.verify(s, "Sure! " + s.reference + " done.") == 1.0
    name = s.reference.split("(")[0]
    assert t.verify(s, f"{name}()") == 0.0
    for bad in ("", "((((", "__import__('os').system('echo hi')", f"{name}(x=open('/etc/passwd'))",
                "a" * 5000 + "(", f"{name}(1, 2)"):
        assert t.verify(s, bad) == 0.0


def test_parse_call_numbers_compare_by_value():
    assert parse_call('f(a=20, b="x")') == parse_call('f(b="x", a=20.0)')
    assert parse_call("no call here") is None


def test_unknown_prompt_form_is_one_config_error():
    import pytest

    from madopd.errors import ConfigError

    with pytest.raises(ConfigError, match="prompt"):
        RealCallsTask(prompt="chat")
